"""What an index file may hold, checked value by value when it is read.

Every problem is one line that names the file, the entry (or ``base_codecs`` item) and the field,
with what was expected and what was found, so a typo in an index is reported where it is, not as
a traceback from inside a download or a conversion. Paths in ``local`` sources (and the file
names of ``url`` sources) must stay inside their folder; that is checked here, before anything
is read or hashed. The schema itself is documented in adapters/README.md.
"""

from __future__ import annotations

import functools

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..core.names import NAME_RULE, is_name
from ..errors import RegistryError

STATUSES = ("published", "recipe")
SOURCE_KINDS = ("hub", "url", "local")
METRIC_SOURCES = ("measured", "paper")
FILE_KEYS = ("entries", "base_codecs")
ENTRY_KEYS = ("id", "codec", "task", "q", "lmbda", "variant", "middle_dim", "status", "source", "sha256", "size", "metrics", "notes",
              "task_model")
BASE_KEYS = ("codec", "q", "source", "sha256", "size")
_REQUIRED = ("id", "codec", "task", "q", "status")
_BASE_REQUIRED = ("codec", "q", "source")
_SOURCE_KEYS = {"hub": ("kind", "repo_id", "path", "revision"), "url": ("kind", "url", "converter", "name"), "local": ("kind", "path")}
_SOURCE_REQUIRED = {"hub": ("repo_id", "path"), "url": ("url",), "local": ("path",)}
_METRIC_KEYS = ("dataset", "images", "metric", "value", "date", "source", "notes")
_METRIC_REQUIRED = ("dataset", "metric", "value")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_DRIVE = re.compile(r"^[A-Za-z]:")  # a Windows drive (C:), which makes a path leave its folder

_NAME_RULE = f": {NAME_RULE}"
Rule = tuple[Callable[[Any], bool], str]


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _whole(minimum: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in choices


def inside_folder(path: Any) -> bool:
    """Whether ``path`` is a relative path that cannot leave the folder it is relative to (string
    tests, not pathlib: an index of 100,000 entries checks 100,000 paths)."""
    if not _text(path) or "\\" in path or path.startswith("/") or _DRIVE.match(path):
        return False
    return ".." not in path.split("/")


def plain_file_name(name: Any) -> bool:
    """A file name with no folder part, not hidden (hidden names are our partial downloads)."""
    return _text(name) and "/" not in name and "\\" not in name and not name.startswith(".")


_ENTRY_RULES: dict[str, Rule] = {
    "id": (lambda v: isinstance(v, str) and all(map(is_name, v.split("/"))), 'names joined by "/" such as "tic/det/q2"'),
    "codec": (is_name, f'a codec name such as "tic" (icmh-hub codecs){_NAME_RULE}'),
    "task": (is_name, f'a task name such as "cls"{_NAME_RULE}'),
    "q": (_whole(1), "a whole number >= 1 such as 2"),
    "lmbda": (lambda v: _number(v) and v > 0, "a positive number such as 6.7, or null"),
    "variant": (_text, 'an adapter method such as "sfma" or "transtic" (icmh-hub methods)'),
    "middle_dim": (_whole(1), "a whole number >= 1 such as 64"),
    "status": (_one_of(STATUSES), " or ".join(f'"{s}"' for s in STATUSES)),
    "sha256": (lambda v: isinstance(v, str) and bool(_SHA256.match(v)), "64 hexadecimal characters, or null"),
    "size": (_whole(1), "the file's size in bytes (a whole number > 0), or null"),
    "notes": (lambda v: isinstance(v, str), "a string"),
    "task_model": (_text, 'the recognition model the adapters were trained for, such as "efficientnet-lite0", or null'),
}
_SOURCE_RULES: dict[str, Rule] = {
    "kind": (_one_of(SOURCE_KINDS), " or ".join(f'"{k}"' for k in SOURCE_KINDS)),
    "repo_id": (lambda v: isinstance(v, str) and bool(_REPO_ID.match(v)), 'a hub repository "ORG/NAME"'),
    "path": (inside_folder, "a relative path that stays inside its folder (no '..', not absolute)"),
    "revision": (_text, "a branch, tag or commit id, or null"),
    "url": (lambda v: isinstance(v, str) and v.startswith(("https://", "http://")), "an http:// or https:// URL"),
    "converter": (_text, 'a converter name such as "tic-reference", or null'),
    "name": (plain_file_name, "a plain file name (no folder, not hidden), or null"),
}
_METRIC_RULES: dict[str, Rule] = {
    "dataset": (_text, "a data set name"),
    "images": (_whole(0), "a whole number of images >= 0, or null"),
    "metric": (_text, 'a metric name such as "top1"'),
    "value": (_number, "a finite number"),
    "date": (lambda v: isinstance(v, str), 'a date string such as "2026-11-25"'),
    "source": (_one_of(METRIC_SOURCES), " or ".join(f'"{s}"' for s in METRIC_SOURCES)),
    "notes": (lambda v: isinstance(v, str), "a string"),
}


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=None)
def _known_set(known: tuple[str, ...]) -> frozenset[str]:
    return frozenset(known)


class _Where:
    """Names the item being checked in every message: file, item, field."""

    def __init__(self, origin: str, item: str) -> None:
        self.prefix = f"index {origin}: {item}" if origin else f"index {item}"

    def error(self, field: str, problem: str) -> RegistryError:
        return RegistryError(f"{self.prefix}, field {field!r}: {problem}; see adapters/README.md")

    def fields(self, data: Mapping[str, Any], rules: Mapping[str, Rule], known: tuple[str, ...], required: tuple[str, ...],
               prefix: str = "") -> None:
        unknown = data.keys() - _known_set(known)
        if unknown:
            raise self.error(prefix + sorted(unknown)[0], f"unknown key (known: {', '.join(known)})")
        for key in required:
            if data.get(key) in (None, ""):
                raise self.error(prefix + key, "is required and missing")
        for key, value in data.items():
            if key in rules and value is not None and not rules[key][0](value):
                raise self.error(prefix + key, f"expected {rules[key][1]}, got {_shown(value)}")


def check_file(data: Any, origin: str) -> None:
    """The top level of an index file: an object with an ``entries`` and a ``base_codecs`` list."""
    if not isinstance(data, Mapping):
        raise RegistryError(f"index file {origin} must hold a JSON object with an \"entries\" list (see adapters/README.md)")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise RegistryError(f"index file {origin} has unknown top-level keys {unknown}; known: {', '.join(FILE_KEYS)}")
    for key in FILE_KEYS:
        if not isinstance(data.get(key, []), list):
            raise RegistryError(f"index file {origin}: {key!r} must be a list, got {_shown(data[key])}")


def _label(data: Any, position: int | None) -> str:
    if isinstance(data, Mapping) and _text(data.get("id")):
        return f"entry {data['id']!r}"
    return f"entry #{position + 1}" if position is not None else "entry"


def check_entry(data: Any, origin: str = "", position: int | None = None) -> None:
    """One entry of ``entries``; RegistryError naming file, entry and field on the first problem."""
    where = _Where(origin, _label(data, position))
    if not isinstance(data, Mapping):
        raise RegistryError(f"{where.prefix} is not a JSON object (got {_shown(data)}); see adapters/README.md")
    where.fields(data, _ENTRY_RULES, ENTRY_KEYS, _REQUIRED)
    if data.get("source") is not None or data["status"] == "published":
        check_source(where, data.get("source"))
    if data["status"] == "published":
        _check_pinned(where, data["source"], data.get("sha256"))
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list):
            raise where.error("metrics", f"expected a list of result objects, got {_shown(metrics)}")
        for i, metric in enumerate(metrics):
            if not isinstance(metric, Mapping):
                raise where.error(f"metrics[{i}]", f"expected an object with dataset, metric, value, got {_shown(metric)}")
            where.fields(metric, _METRIC_RULES, _METRIC_KEYS, _METRIC_REQUIRED, prefix=f"metrics[{i}].")


def check_base(data: Any, origin: str, position: int) -> None:
    """One item of ``base_codecs``: codec, q, source (always needed), sha256, size."""
    label = f"base_codecs item #{position + 1}"
    if isinstance(data, Mapping) and _text(data.get("codec")) and _whole(1)(data.get("q")):
        label += f" ({data['codec']} q{data['q']})"
    where = _Where(origin, label)
    if not isinstance(data, Mapping):
        raise RegistryError(f"{where.prefix} is not a JSON object (got {_shown(data)}); see adapters/README.md")
    where.fields(data, _ENTRY_RULES, BASE_KEYS, _BASE_REQUIRED)
    check_source(where, data["source"])
    _check_pinned(where, data["source"], data.get("sha256"))


def check_source(where: _Where, source: Any) -> None:
    if not isinstance(source, Mapping):
        raise where.error("source", f"expected an object with kind {', '.join(SOURCE_KINDS)}, got {_shown(source)}")
    kind = source.get("kind")
    if kind not in SOURCE_KINDS:
        raise where.error("source.kind", f"expected {_SOURCE_RULES['kind'][1]}, got {_shown(kind)}")
    where.fields(source, _SOURCE_RULES, _SOURCE_KEYS[kind], _SOURCE_REQUIRED[kind], prefix="source.")


def _check_pinned(where: _Where, source: Mapping[str, Any], sha256: Any) -> None:
    if sha256 is None and source["kind"] != "url":
        raise where.error("sha256", "pins no sha256; every hub or local file must be pinned (icmh-hub push prints it)")
