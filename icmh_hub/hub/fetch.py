"""Fetching what an index entry names: its file, downloaded or found, verified before use.

Hub sources go through ``hf_hub_download``, URL sources through our cache (trust on first use
when the index pins no sha256), local sources are read where the index says. A URL source with
a ``converter`` (the paper's released checkpoints) is converted once into an adapter file,
which is cached and whose sha256 is recorded on first use as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .._io import atomic_path
from ..errors import IntegrityError, MissingFileError, RegistryError, unknown_name
from . import transport
from .index import BaseEntry, Entry, local_path


def _reference_converter() -> Callable[..., Path]:
    from ..formats.reference import convert_reference

    return convert_reference


# converter name in index entries -> a function giving the converter (imported when used)
CONVERTERS: dict[str, Callable[[], Callable[..., Path]]] = {"tic-reference": _reference_converter}


def fetch(entry: Entry) -> Path:
    """The entry's adapter file, downloaded (or taken from the cache) and verified before use."""
    if entry.status == "recipe":
        raise RegistryError(
            f"{entry.id} is a recipe, not trained yet (no file to download); `icmh-hub info {entry.id}` "
            "shows the command that trains it, then `icmh-hub push` the result"
        )
    return _fetch_source(entry.source or {}, entry.sha256, entry.size, entry.origin, entry.id, entry.codec, entry.q, entry.task)


def fetch_base(base: BaseEntry) -> Path:
    """The base codec's weights file named by a ``base_codecs`` item, verified."""
    return _fetch_source(base.source, base.sha256, base.size, base.origin, f"{base.codec} q{base.q} base weights", base.codec, base.q, None)


def _fetch_source(source: Mapping[str, Any], sha256: str | None, size: int | None, origin: str, what: str,
                  codec: str, q: int, task: str | None) -> Path:
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
    download = transport.fetch_url(source["url"], sha256=sha256, name=source.get("name"))
    if size is not None and download.stat().st_size != size:
        transport.verify(download, None, size, what=what)
    converter = source.get("converter")
    return _converted(download, converter, codec, q, task) if converter else download


def converted_target(download: Path, converter: str, task: str | None) -> Path:
    """Where the converted form of a downloaded reference checkpoint is cached."""
    return download.with_name(f"{download.name}.{converter}.{task or 'base'}.safetensors")


def trust_note(source: Mapping[str, Any], task: str | None) -> str:
    """What was recorded on first use for an unpinned URL source (and its converted file)."""
    records = transport.trust_records()
    seen = records.get(source.get("url", ""))
    if not seen:
        return "trust on first use; nothing recorded yet (the first download will be)"
    note = f"trust on first use; recorded {seen['sha256']} on {seen['first_used']}"
    if source.get("converter"):
        target = converted_target(transport.url_target(source["url"], source.get("name")), source["converter"], task)
        converted = records.get(f"converted:{target}")
        if converted:
            note += f"; converted file {converted['sha256']} recorded on {converted['first_used']}"
    return note


def _converted(download: Path, converter: str, codec: str, q: int, task: str | None) -> Path:
    """Convert a downloaded reference checkpoint once; the result is cached and its sha256 recorded."""
    out = converted_target(download, converter, task)
    key = f"converted:{out}"
    record = transport.trust_records().get(key)
    if out.is_file() and record:
        try:
            transport.verify(out, record["sha256"], what=f"converted {download.name}")
            return out
        except IntegrityError:
            transport.forget_trust(key)
    if converter not in CONVERTERS:
        raise unknown_name("converter", converter, sorted(CONVERTERS))
    convert = CONVERTERS[converter]()
    with atomic_path(out) as temporary:
        convert(download, codec=codec, q=q, task=task, out=temporary)
    transport.record_trust(key, out, source=str(download), converter=converter)
    return out
