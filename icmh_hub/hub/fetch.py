"""Fetching what an index entry names: its file, downloaded or found, verified before use.

Hub sources go through ``hf_hub_download``, URL sources through our cache (trust on first use
when the index pins no sha256), local sources are read where the index says (inside its
folder). A URL source with a ``converter`` (the paper's released checkpoints) is converted once
into an adapter file, after checking the base codec inside the checkpoint against the entry's
base codec (``Entry.base``); the converted file is cached, and its record (its sha256, and the
sha256s of the checkpoint and base codec it came from) is checked on every later use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .._io import read_state_dict
from ..errors import CheckpointError, DownloadError, IntegrityError, MissingFileError, RegistryError, unknown_name
from . import transport
from .index import BaseEntry, Entry, local_path


@dataclass(frozen=True)
class Converter:
    """Turns a downloaded reference checkpoint into an adapter file: ``convert(checkpoint, codec=,
    q=, task=, out=, base=, **info)`` writes ``out`` atomically (as ``save_adapters`` does), checking
    the checkpoint against the ``base`` weights file when one is given; ``version`` changes
    whenever its output would."""

    convert: Callable[..., Path]
    version: int


def _tic_reference() -> Converter:
    from ..formats.reference import CONVERTER_VERSION, convert_reference

    return Converter(convert_reference, CONVERTER_VERSION)


def _transtic_reference() -> Converter:
    from ..formats.reference import TRANSTIC_CONVERTER_VERSION, convert_transtic

    return Converter(convert_transtic, TRANSTIC_CONVERTER_VERSION)


# converter name in index entries -> a function giving the converter (imported when used)
CONVERTERS: dict[str, Callable[[], Converter]] = {"tic-reference": _tic_reference, "transtic-reference": _transtic_reference}


def fetch(entry: Entry) -> Path:
    """The entry's adapter file, downloaded (or taken from the cache), converted if the entry
    says so, and verified before use."""
    if entry.status == "recipe":
        raise RegistryError(
            f"{entry.id} is a recipe, not trained yet (no file to download); `icmh-hub info {entry.id}` "
            "shows the command that trains it, then `icmh-hub push` the result"
        )
    source = entry.source or {}
    path = _fetch_source(source, entry.sha256, entry.size, entry.origin, entry.id)
    return _converted(entry, path) if source.get("converter") else path


def fetch_base(base: BaseEntry) -> Path:
    """The base codec's weights file named by a ``base_codecs`` item, verified."""
    return _fetch_source(base.source, base.sha256, base.size, base.origin, f"{base.codec} q{base.q} base weights")


def _fetch_source(source: Mapping[str, Any], sha256: str | None, size: int | None, origin: str, what: str) -> Path:
    kind = source["kind"]
    if kind == "local" and origin.startswith("hf://"):  # a file beside a hub-hosted index
        repo_id, revision, index_path = transport.parse_hf_uri(origin)
        path = str(PurePosixPath(index_path).parent / source["path"]).lstrip("./")
        source, kind = {"kind": "hub", "repo_id": repo_id, "path": path, "revision": revision}, "hub"
    if kind == "hub":
        path = transport.download_hub_file(source["repo_id"], source["path"], source.get("revision"))
        transport.verify(path, sha256, size, what=what)
        return path
    if kind == "local":
        path = local_path(origin, source["path"])
        if not path.is_file():
            raise MissingFileError(f"{what}: file {path} named by {origin} does not exist; put it there or fix the index")
        transport.verify(path, sha256, size, what=what, remove=False)
        return path
    download = transport.fetch_url(source["url"], sha256=sha256, name=source.get("name"),
                                   check=lambda path: check_weights_file(path, source["url"]))
    if size is not None and download.stat().st_size != size:
        transport.verify(download, None, size, what=what)
    return download


def check_weights_file(path: Path, url: str) -> None:
    """Refuse (DownloadError) a download that is not weights: neither a safetensors file nor a
    torch checkpoint holding a state_dict of tensors (loaded with weights_only=True). An HTML
    page served with status 200, or a body cut short, is caught here before it is trusted."""
    import torch

    try:
        state = read_state_dict(path, "downloaded")
        if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError("not a state_dict of tensors")
    except CheckpointError:
        head = path.read_bytes()[:64].lstrip().lower()
        what = "an HTML page" if head.startswith((b"<!doctype html", b"<html", b"<")) else "no weights file"
        raise DownloadError(
            f"{url} sent {what} ({path.stat().st_size:,} bytes), not a safetensors file or a torch checkpoint of "
            "weights; nothing was recorded or kept. Check the URL (a login or error page?) or the mirror, then retry"
        ) from None


# ----------------------------------------------------------------------------- converted files


def _expected_sha256(source: Mapping[str, Any], pinned: str | None) -> str | None:
    """The sha256 a verified file of ``source`` has: pinned by the index, or recorded on first use."""
    if pinned or source.get("kind") != "url":
        return pinned
    return transport.trust_records().get(source["url"], {}).get("sha256")


def converted_target(download: Path, converter: str, task: str | None) -> Path:
    """Where the converted form of a downloaded reference checkpoint is cached."""
    return download.with_name(f"{download.name}.{converter}.{task or 'base'}.safetensors")


def _converted_key(entry: Entry) -> str:
    return transport.converted_key((entry.source or {}).get("url"), entry.task, entry.sha256)


def _converter(name: str) -> Converter:
    if name not in CONVERTERS:
        raise unknown_name("converter", name, sorted(CONVERTERS))
    return CONVERTERS[name]()


def _converted(entry: Entry, download: Path) -> Path:
    """Convert a downloaded reference checkpoint once (checking its embedded base codec against
    ``entry.base``); later uses take the cached file while its record still fits."""
    source = entry.source or {}
    converter = _converter(source["converter"])
    base = fetch_base(entry.base) if entry.base is not None else None
    embedded = base is not None and base.resolve() == download.resolve()  # the index made the checkpoint its own base
    wanted = {
        "source_url": source["url"], "source_sha256": _expected_sha256(source, entry.sha256),
        "base_sha256": _expected_sha256(entry.base.source, entry.base.sha256) if entry.base else None,
        "base": "embedded" if embedded else "checked" if base is not None else "not checked",
        "converter": source["converter"], "converter_version": converter.version,
    }
    out, key = converted_target(download, source["converter"], entry.task), _converted_key(entry)
    with transport.locked(out):
        record = transport.trust_records().get(key)
        if out.is_file() and record and all(record.get(k) == v for k, v in wanted.items()):
            try:
                transport.verify(out, record["sha256"], what=f"converted {download.name}")
                return out
            except IntegrityError:  # derived here from verified files: made again, not refused
                pass
        converter.convert(download, codec=entry.codec, q=entry.q, task=entry.task, out=out,
                          base=None if embedded else base, source_url=source["url"], base_check=wanted["base"])
        transport.record_trust(key, out, **wanted)
    return out


def retrust(entry: Entry) -> list[str]:
    """Forget what was recorded on first use for the entry's unpinned URL files (its own, its base
    codec's, its converted file) and drop their cached copies: the next fetch trusts what it gets.
    The explicit step after a publisher replaced a file on purpose; returns the URLs forgotten."""
    forgotten = []
    for source, pinned in ((entry.source, entry.sha256), *([(entry.base.source, entry.base.sha256)] if entry.base else [])):
        if source and source.get("kind") == "url" and not pinned:
            target = transport.url_target(source["url"], source.get("name"))
            with transport.locked(target):
                transport.remove_cached(target)
            transport.forget_trust(source["url"])
            forgotten.append(source["url"])
    if (entry.source or {}).get("converter"):
        transport.forget_trust(_converted_key(entry))
    return forgotten


def trust_note(source: Mapping[str, Any] | None, pinned: str | None, entry: Entry | None = None) -> str:
    """How a file is verified, in one phrase: pinned by the index, or what was recorded on first use."""
    if pinned:
        return f"{pinned} (pinned by the index)"
    if not source:
        return "none (no file yet)"
    if source.get("kind") != "url":
        return "NOT PINNED"  # the schema refuses this for hub and local sources
    seen = transport.trust_records().get(source["url"])
    note = "NOT PINNED by the index: trust on first use; "
    note += f"recorded {seen['sha256']} on {seen['first_used']}" if seen else "nothing recorded yet (the first download will be)"
    converted = transport.trust_records().get(_converted_key(entry)) if entry and source.get("converter") else None
    if converted:
        note += f"; converted file {converted['sha256']} recorded on {converted['first_used']} (base codec {converted['base']})"
    return note


# ----------------------------------------------------------------------------- files straight from a Hub repo


def hub_trust_key(repo_id: str, filename: str, revision: str | None) -> str:
    """The trust record's key of a Hub file used with no registry entry."""
    return f"hf://{repo_id}@{revision or 'main'}/{filename}"


_HUB_RETRUST_HINT = "icmh_hub.from_hub(..., retrust=True), or pin the revision you trust"


def fetch_hub_adapter(repo_id: str, filename: str, revision: str | None = None, sha256: str | None = None,
                      retrust: bool = False) -> Path:
    """A file of a Hub repo that no index entry names, downloaded and verified: against ``sha256``
    when given, else trust on first use (the first download's sha256 is recorded under repo,
    revision and path; a later one must match it, so a file replaced at ``main`` is refused until
    ``retrust=True`` or a pinned ``revision``)."""
    key = hub_trust_key(repo_id, filename, revision)
    if retrust:
        transport.forget_trust(key)
    path = transport.download_hub_file(repo_id, filename, revision)
    record = None if sha256 else transport.trust_records().get(key)
    if sha256 or record:
        try:
            transport.verify(path, sha256 or record["sha256"], what=key, first_use=record and record["first_used"])
        except IntegrityError as exc:
            raise IntegrityError(str(exc).replace(transport.RETRUST_HINT, _HUB_RETRUST_HINT)) from None
    else:
        transport.record_trust(key, path)
    return path
