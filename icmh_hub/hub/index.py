"""The registry index: which adapter file serves (codec, task, q, lambda, variant), where it
lives, what it measured.

The index is JSON (``{"entries": [...], "base_codecs": [...]}``, schema in adapters/README.md,
checked value by value by ``schema``). The built-in index is every ``*.json`` shipped in
``icmh_hub.index``; users merge their own over it (a file, a folder of files, or
``hf://ORG/NAME[@REV]/index.json``) through ``index=``, the CLI's ``--index`` or
``$ICMH_HUB_INDEX`` (several joined with ``os.pathsep``). A later index wins: an entry replaces
the earlier one with the same id *or* the same (codec, task, q, lambda, variant), since ``load()`` could
not choose between them, and both sides remember it (``Entry.overrides`` / ``overridden_by``);
a later base codec replaces the earlier one of the same codec and quality. Within one file the
same id, (codec, task, q, lambda, variant) or base codec twice is an error.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, parse_json
from ..core.spec import list_codecs
from ..core.methods import method_name
from ..errors import MissingFileError, RegistryError, unknown_name
from . import schema, transport

INDEX_ENV = "ICMH_HUB_INDEX"
IndexSpec = str | os.PathLike | Sequence[str | os.PathLike] | None


@dataclass(frozen=True)
class BaseEntry:
    """Base-codec weights that do not come from CompressAI's zoo (TIC), for one codec and q."""

    codec: str
    q: int
    source: dict[str, Any]
    sha256: str | None = None
    size: int | None = None
    origin: str = ""

    def where(self) -> str:
        return _where(self.source, self.origin)


@dataclass(frozen=True)
class Entry:
    """One adapter set in the index. ``origin``: the index file (or hf:// address) it came from;
    ``base``: the merged index's base codec for its codec and q (None: the builder's own, e.g.
    CompressAI's zoo); ``overrides`` / ``overridden_by``: which entry it replaced or lost to."""

    id: str
    codec: str
    task: str
    q: int
    status: str
    lmbda: float | None = None
    variant: str = "sfma"
    middle_dim: int = 64
    source: dict[str, Any] | None = None
    sha256: str | None = None
    size: int | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""
    task_model: str | None = None  # the recognition model trained for (None: not recorded)
    origin: str = ""
    base: BaseEntry | None = None
    overrides: str = ""
    overridden_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The entry as it is written in an index file (no origin, base or override notes)."""
        data = asdict(self)
        return {key: data[key] for key in schema.ENTRY_KEYS if key != "task_model" or data[key] is not None}

    @property
    def key(self) -> tuple[str, str, int, float | None, str]:
        """What ``load()`` selects by: (codec, task, q, lambda, variant); one entry per key in a merged index."""
        return self.codec, self.task, self.q, None if self.lmbda is None else float(f"{self.lmbda:.9g}"), self.variant

    @property
    def revision(self) -> str | None:
        return (self.source or {}).get("revision")

    @property
    def method(self) -> str:
        """The adapter method (the index's ``variant`` field, its name in 0.1)."""
        return self.variant

    def where(self) -> str:
        """Where the file lives, in one short phrase."""
        return _where(self.source, self.origin)


def _where(source: Mapping[str, Any] | None, origin: str) -> str:
    source = source or {}
    kind = source.get("kind")
    if kind == "hub":
        rev = source.get("revision") or "main"
        return f"hf://{source.get('repo_id')}@{rev[:12]}/{source.get('path')}"
    if kind == "url":
        return source.get("url", "?") + (f" (converter {source['converter']})" if source.get("converter") else "")
    if kind == "local":
        return os.path.join(os.path.dirname(origin), source.get("path", ""))
    return "(no file: recipe only)"


@dataclass
class Index:
    entries: dict[str, Entry] = field(default_factory=dict)
    bases: dict[tuple[str, int], BaseEntry] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    overridden: dict[str, Entry] = field(default_factory=dict)  # replaced by a later index; see Entry.overridden_by
    by_key: dict[tuple, str] = field(default_factory=dict)  # Entry.key -> id of the entry in ``entries``


# ----------------------------------------------------------------------------- reading indexes


def builtin_index_files() -> list[Path]:
    folder = files("icmh_hub.index")
    return sorted(Path(str(item)) for item in folder.iterdir() if item.name.endswith(".json"))


def split_locations(text: str) -> list[str]:
    """Split an os.pathsep-joined list of index locations, keeping ``hf://`` addresses whole."""
    parts, found = text.split(os.pathsep), []
    for part in parts:
        if found and found[-1] == "hf" and part.startswith("//"):
            found[-1] += os.pathsep + part
        else:
            found.append(part)
    return [p for p in found if p.strip()]


def _index_locations(index: IndexSpec) -> list[str]:
    """User index locations, the environment's first, then ``index`` (so ``index`` wins)."""
    found = split_locations(os.environ.get(INDEX_ENV, ""))
    if isinstance(index, (str, os.PathLike)):
        found += split_locations(str(index))
    elif index:
        found += [str(p) for p in index]
    return found


def _expand(location: str) -> list[tuple[Path, str]]:
    """(file to read, origin) pairs for one location: a JSON file, a folder of them, or hf://."""
    if location.startswith("hf://"):
        repo_id, revision, path = transport.parse_hf_uri(location)
        return [(transport.download_hub_file(repo_id, path, revision), location)]
    path = Path(location).expanduser()
    if path.is_dir():
        return [(p, str(p)) for p in sorted(path.glob("*.json"))]
    if path.is_file():
        return [(path, str(path))]
    raise MissingFileError(f"index {location!r} does not exist; give a JSON file, a folder of JSON files or hf://ORG/NAME/index.json (check ${INDEX_ENV} and --index)")


def _read_json(path: Path, origin: str) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"index file {origin} cannot be read ({exc}); fix or remove it") from None
    data = parse_json(text, f"index file {origin}", RegistryError)
    schema.check_file(data, origin)
    return data


def entry_from_dict(data: Mapping[str, Any], origin: str = "", position: int | None = None) -> Entry:
    """Check one entry dict (the schema in adapters/README.md) and make it an Entry."""
    schema.check_entry(data, origin, position)
    fields = {key: data[key] for key in schema.ENTRY_KEYS if key in data and data[key] is not None}
    fields["metrics"] = [dict(m) for m in fields.get("metrics", [])]
    if "lmbda" in fields:
        fields["lmbda"] = float(fields["lmbda"])
    return Entry(**fields, origin=origin)


def _base_from_dict(data: Mapping[str, Any], origin: str, position: int) -> BaseEntry:
    schema.check_base(data, origin, position)
    return BaseEntry(codec=data["codec"], q=data["q"], source=dict(data["source"]), sha256=data.get("sha256"),
                     size=data.get("size"), origin=origin)


def _parse(data: Mapping[str, Any], origin: str) -> tuple[list[Entry], list[BaseEntry]]:
    """The entries and base codecs of one index file; the same id, (codec, task, q, lambda, variant) or
    base codec twice in it is an error (which one was meant cannot be told)."""
    entries = [entry_from_dict(item, origin, i) for i, item in enumerate(data.get("entries", []))]
    bases = [_base_from_dict(item, origin, i) for i, item in enumerate(data.get("base_codecs", []))]
    for what, keys in (("id", [e.id for e in entries]), ("(codec, task, q, lambda, variant)", [e.key for e in entries]),
                       ("base codec (codec, q)", [(b.codec, b.q) for b in bases])):
        twice = _first_repeated(keys)
        if twice is not None:
            shown = twice if isinstance(twice, str) else ", ".join("-" if v is None else str(v) for v in twice)
            raise RegistryError(f"index file {origin} has two items with the same {what} ({shown}); remove or rename one")
    return entries, bases


def _first_repeated(keys: Iterable[Any]) -> Any:
    """The first key seen twice, or None (one pass over a set)."""
    seen: set[Any] = set()
    return next((k for k in keys if k in seen or seen.add(k)), None)


def _merge(merged: Index, entry: Entry) -> None:
    """Put ``entry`` in ``merged``, replacing any entry with its id or its (codec, task, q, lambda, variant)."""
    by_key = merged.by_key.get(entry.key)
    beaten = [merged.entries[i] for i in dict.fromkeys([entry.id, by_key]) if i in merged.entries]
    for old in beaten:
        del merged.entries[old.id]
        merged.by_key.pop(old.key, None)
        merged.overridden[old.id] = dataclasses.replace(old, overridden_by=f"{entry.id} ({entry.origin})")
    if beaten:
        entry = dataclasses.replace(entry, overrides="; ".join(f"{old.id} ({old.origin})" for old in beaten))
    merged.overridden.pop(entry.id, None)
    merged.entries[entry.id] = entry
    merged.by_key[entry.key] = entry.id


def load_index(index: IndexSpec = None) -> Index:
    """The built-in index with the user's indexes merged over it (later ones win, see the module doc)."""
    merged = Index()
    sources = [(p, str(p)) for p in builtin_index_files()]
    for location in _index_locations(index):
        sources += _expand(location)
    for path, origin in sources:
        entries, bases = _parse(_read_json(path, origin), origin)
        for entry in entries:
            _merge(merged, entry)
        for base in bases:
            merged.bases[(base.codec, base.q)] = base
        merged.files.append(origin)
    def with_base(entry: Entry) -> Entry:
        base = merged.bases.get((entry.codec, entry.q))
        return entry if base is None else dataclasses.replace(entry, base=base)

    merged.entries = {k: with_base(e) for k, e in merged.entries.items()}
    merged.overridden = {k: with_base(e) for k, e in merged.overridden.items()}
    return merged


# ----------------------------------------------------------------------------- queries


def list_entries(codec: str | None = None, task: str | None = None, index: IndexSpec = None) -> list[Entry]:
    """Entries, optionally only those of ``codec`` and/or ``task``, sorted by codec, task, q."""
    entries = load_index(index).entries.values()
    chosen = [e for e in entries if (codec is None or e.codec == codec) and (task is None or e.task == task)]
    return sorted(chosen, key=lambda e: (e.codec, e.task, e.q, e.lmbda or 0.0, e.id))


def get_entry(entry_id: str, index: IndexSpec = None) -> Entry:
    """The entry called ``entry_id`` (e.g. ``mbt2018-mean/cls/q3``); one replaced by a later index
    is still found (its ``overridden_by`` says which entry ``load()`` uses instead)."""
    merged = load_index(index)
    found = merged.entries.get(entry_id) or merged.overridden.get(entry_id)
    if found is None:
        raise unknown_name("registry entry", entry_id, sorted(merged.entries), hint="`icmh-hub list` shows them all.")
    return found


def _known_codecs(entries: Iterable[Entry]) -> list[str]:
    return sorted(set(list_codecs()) | {e.codec for e in entries})


def resolve(
    codec: str, task: str, q: int, lmbda: float | None = None, revision: str | None = None, index: IndexSpec = None,
    variant: str | None = None, method: str | None = None,
) -> Entry:
    """The entry for ``codec``/``task``/``q`` (and ``lmbda`` / ``revision`` / ``method`` when given).

    Unknown names list the closest ones and what exists. Without ``lmbda``, a published entry
    is preferred to a recipe; two published ones with different lambdas need ``lmbda``. Without
    ``method`` (``variant`` is its 0.1 name), the SFMA entries: other methods are asked for by name.
    """
    method = method_name(method, variant)
    entries = list(load_index(index).entries.values())
    if codec not in _known_codecs(entries):
        raise unknown_name("codec", codec, _known_codecs(entries))
    of_codec = [e for e in entries if e.codec == codec]
    tasks = sorted({e.task for e in of_codec})
    if task not in tasks:
        raise unknown_name(f"task for {codec}", task, tasks, hint="`icmh-hub list` shows every entry; train one with `icmh-hub train`.")
    of_task = [e for e in of_codec if e.task == task]
    qualities = sorted({e.q for e in of_task})
    if q not in qualities:
        raise unknown_name(f"quality for {codec}/{task}", q, qualities, hint=f"`icmh-hub list --codec {codec} --task {task}` shows them.")
    chosen = [e for e in of_task if e.q == q]
    methods = sorted({e.method for e in chosen})
    chosen = [e for e in chosen if e.method == method]
    if not chosen:
        raise unknown_name(f"method for {codec}/{task}/q{q}", method, methods,
                           hint="Entries of other methods are loaded by name: method='transtic' (--method).")
    if lmbda is not None:
        lambdas = [e.lmbda for e in chosen]
        chosen = [e for e in chosen if e.lmbda is not None and math.isclose(e.lmbda, lmbda, rel_tol=1e-6)]
        if not chosen:
            raise unknown_name(f"lambda for {codec}/{task}/q{q}", lmbda, lambdas)
    if revision is not None:
        revisions = [e.revision for e in chosen]
        chosen = [e for e in chosen if e.revision and (e.revision == revision or e.revision.startswith(revision))]
        if not chosen:
            raise unknown_name(
                f"revision for {codec}/{task}/q{q}", revision, [r for r in revisions if r],
                hint="Only revisions pinned (with their sha256) in an index can be loaded; add an entry for it (icmh-hub push prints one).",
            )
    published = [e for e in chosen if e.status == "published"]
    pool = published or chosen
    if len({e.lmbda for e in pool}) > 1:
        choices = ", ".join(f"{e.lmbda} ({e.id})" for e in pool)
        raise RegistryError(f"{codec}/{task}/q{q} has several entries; pass lmbda= (or --lmbda) to choose: {choices}")
    return pool[0]


def find_by_sha256(sha256: str, index: IndexSpec = None) -> Entry | None:
    """The entry whose adapter file has this sha256 (to name the adapters inside a bitstream), or
    None: pinned by the index, or recorded when the file was first used (an unpinned URL file, or
    the adapter file converted from a reference checkpoint). Entries replaced by a later index
    count too (files coded with them still decode)."""
    sha256 = sha256.lower()
    merged = load_index(index)
    records = transport.trust_records()
    entries = [*merged.entries.values(), *merged.overridden.values()]
    return next((e for e in entries if adapter_sha256(e, records) == sha256), None)


def adapter_sha256(entry: Entry, records: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The sha256 of the adapter file ``entry`` hands out, if known: the converted file's record
    for a converter entry (the index pins the checkpoint, not what it becomes), else the pin,
    else the record of its unpinned URL."""
    source = entry.source or {}
    if source.get("converter"):
        record = records.get(transport.converted_key(source["url"], entry.task, entry.sha256))
    elif entry.sha256:
        return entry.sha256.lower()
    else:
        record = records.get(source["url"]) if source.get("kind") == "url" else None
    return record["sha256"] if record else None


def local_path(origin: str, relative: str) -> Path:
    """Where a ``local`` source lives: inside the folder of the index file naming it. Checked
    (symbolic links resolved) before anything is read, so an index cannot point at other files."""
    folder = Path(origin).parent if origin else Path.cwd()
    path = folder / relative
    if not schema.inside_folder(relative) or not path.resolve().is_relative_to(folder.resolve()):
        raise RegistryError(
            f"index {origin or '(given)'}: local path {relative!r} leaves the index's folder {folder}; "
            "put the file inside that folder and name it relative to it"
        )
    return path


# ----------------------------------------------------------------------------- writing indexes


def _read_or_empty(index_file: Path) -> dict[str, Any]:
    return _read_json(index_file, str(index_file)) if index_file.exists() else {"entries": []}


def add_entry(index_file: str | os.PathLike, entry_dict: Mapping[str, Any], replace: bool = False) -> Entry:
    """Add ``entry_dict`` to ``index_file`` (created if missing); an id already there needs ``replace``."""
    index_file = Path(index_file)
    entry = entry_from_dict(entry_dict, str(index_file))
    data = _read_or_empty(index_file)
    items = data.setdefault("entries", [])
    at = next((i for i, item in enumerate(items) if item.get("id") == entry.id), None)
    if at is not None and items[at] != entry.to_dict() and not replace:
        raise RegistryError(f"{index_file} already has an entry {entry.id!r} with other content; pass replace=True (--force) to overwrite it")
    if at is None:
        items.append(entry.to_dict())
    else:
        items[at] = entry.to_dict()
    _parse(data, str(index_file))  # still one entry per id and per (codec, task, q, lambda, variant)
    atomic_write_json(index_file, data)
    return entry


def record_metrics(index_file: str | os.PathLike, entry_id: str, results: Iterable[Mapping[str, Any]]) -> Entry:
    """Add measured results to an entry of ``index_file``; a result for the same data set, metric
    and source replaces the older one."""
    index_file = Path(index_file)
    data = _read_or_empty(index_file)
    items = data.get("entries", [])
    at = next((i for i, item in enumerate(items) if item.get("id") == entry_id), None)
    if at is None:
        raise unknown_name(f"entry in {index_file}", entry_id, [item.get("id") for item in items])
    metrics = list(items[at].get("metrics") or [])
    for result in results:
        result = dict(result)
        result.setdefault("source", "measured")
        missing = [k for k in ("dataset", "metric", "value") if k not in result]
        if missing:
            raise RegistryError(f"a result for {entry_id} lacks {', '.join(missing)}; give dataset, images, metric, value, date")
        same = lambda m: (m.get("dataset"), m.get("metric"), m.get("source")) == (result["dataset"], result["metric"], result["source"])  # noqa: E731
        metrics = [m for m in metrics if not same(m)] + [result]
    items[at] = dict(items[at], metrics=metrics)
    entry = entry_from_dict(items[at], str(index_file))
    atomic_write_json(index_file, data)
    return entry
