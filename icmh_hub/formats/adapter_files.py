"""Adapter files: one safetensors file per task adapter set, self-describing through its metadata.

safetensors holds tensors only (no pickle, nothing executes on load). Its ``__metadata__`` (a
str -> str map, each value JSON) says what the tensors fit: format and version, codec, quality,
N, insertion points, the method and its config (``icmh_hub.core.methods``: d and init for SFMA,
M and the mask width for the scalable methods, the token count for TransTIC), and the task
description (task, lambda, recipe, ...). Files written by 0.1 name the method ``variant``.

Loading trusts nothing in the file: the method must be registered and run on the codec, the
config's types and ranges are checked, the points must be the method's own points on that codec
(a file cannot hook the entropy models), the adapters are built on the meta device (no memory)
and their layout (N, M) and tensor names and shapes compared with the file's, all before anything
is allocated, so an absurd ``middle_dim`` costs nothing; tensors that are not finite are refused
by name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._io import atomic_path, parse_json, sha256_of
from ..core.adapter_set import AdapterSet
from ..core.methods import Method, get_method
from ..core.names import NAME_RULE, is_name
from ..core.spec import CodecSpec, get_codec
from ..errors import AdapterFileError, IcmhError

FORMAT = "icmh-adapter"
FORMAT_VERSION = 1
_REQUIRED = ("codec", "quality", "channels", "points")
MAX_POINT_PATH = 200


def save_adapters(adapters: AdapterSet, path: str | os.PathLike, **info: Any) -> Path:
    """Write ``adapters`` to ``path`` (safetensors); keyword arguments are added to its info.

    The metadata holds the layout (codec, quality, N, points), the method's config (its
    ``method`` field says which class reads the file; ``variant`` repeats it for readers of
    icmh-hub 0.1) and the info. The file is written next to its destination first and renamed
    into place, so a crash never leaves a truncated adapter file behind.
    """
    if not isinstance(adapters, AdapterSet):
        raise AdapterFileError(f"save_adapters takes an AdapterSet, got {type(adapters).__name__}")
    adapters.info.update(info)
    fields = adapters.layout() | adapters.config.to_metadata()
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)} | {key: json.dumps(value) for key, value in fields.items()}
    metadata["info"] = json.dumps(adapters.info, sort_keys=True, default=str)
    tensors = {name: t.detach().cpu().contiguous() for name, t in adapters.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of an adapter file (layout, the method's config, ``info``), checked
    for format; ``method`` is always set (0.1 files name it ``variant``)."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"adapter file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFileError(
            f"{path} is not a readable safetensors adapter file ({exc}); adapters are safetensors "
            "files written by icmh_hub.save_adapters (convert reference checkpoints with "
            "`icmh-hub convert`)"
        ) from None
    if raw.get("format") != FORMAT:
        raise AdapterFileError(f"{path} is a safetensors file but not an icmh-hub adapter file (no '{FORMAT}' metadata)")
    version = raw.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise AdapterFileError(
            f"{path} has adapter format version {version}, this icmh-hub reads version "
            f"{FORMAT_VERSION}; upgrade icmh-hub (in its clone: git pull, then pip install -e .) or re-save the adapters"
        )
    meta = {key: parse_json(value, f"{path}: adapter metadata {key}", AdapterFileError)
            for key, value in raw.items() if key not in ("format", "format_version")}
    missing = [key for key in _REQUIRED if key not in meta] + ([] if "method" in meta or "variant" in meta else ["method"])
    if missing:
        raise AdapterFileError(f"{path} has damaged adapter metadata (no {', '.join(missing)}); re-download or re-save it")
    meta.setdefault("method", meta.get("variant"))
    if meta.get("variant", meta["method"]) != meta["method"]:
        raise _bad(path, meta, "variant", f"it repeats method={meta['method']!r}")
    meta.setdefault("info", {})
    task = meta["info"].get("task") if isinstance(meta["info"], dict) else None
    if not isinstance(meta["info"], dict) or (task is not None and not is_name(task)):
        raise _bad(path, meta, "info", f"an object whose task, if any, has {NAME_RULE}")
    return meta


def load_adapters(path: str | os.PathLike) -> AdapterSet:
    """Read an adapter file written by ``save_adapters`` into a new AdapterSet of its method's
    class. Everything the file says is checked before memory is allocated for it."""
    meta = read_metadata(path)
    info = meta.pop("info")
    spec, method = _check_names(path, meta)
    kind = method.adapter_class()
    try:
        config = dataclasses.replace(method.config.from_metadata(meta, f"{path}: adapter metadata"), method=method.name)
        points = _check_points(path, meta.get("points"), kind.allowed_points(spec, meta["quality"], config))
        with torch.device("meta"):  # shapes only: nothing is allocated
            built = kind(spec.name, meta["quality"], points, config, info)
    except AdapterFileError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IcmhError) as exc:
        raise AdapterFileError(f"{path} has adapter metadata that makes no sense ({exc}); the file is damaged") from None
    _check_layout(path, meta, built.layout())
    expected = {name: tuple(t.shape) for name, t in built.state_dict().items()}
    tensors = _read_tensors(path, expected)
    adapters = kind(spec.name, meta["quality"], points, config, info)
    adapters.load_state_dict(tensors)
    adapters.sha256 = sha256_of(path)
    return adapters


def _bad(path: str | os.PathLike, meta: Mapping[str, Any], key: str, rule: str) -> AdapterFileError:
    return AdapterFileError(f"{path}: adapter metadata {key}={meta.get(key)!r} is invalid ({rule}); the file is damaged")


def _check_names(path: str | os.PathLike, meta: dict[str, Any]) -> tuple[CodecSpec, Method]:
    """The codec and quality it names exist, and its method is registered and runs on that codec."""
    try:
        spec = get_codec(meta.get("codec"))
    except KeyError:
        raise _bad(path, meta, "codec", "not a codec this icmh-hub knows") from None
    quality = meta.get("quality")
    if not _is_int(quality) or quality not in spec.channels:
        raise _bad(path, meta, "quality", f"one of {list(spec.qualities)} for {spec.name}")
    try:
        method = get_method(meta.get("method"))
        method.check_codec(spec.name)
    except (KeyError, IcmhError) as exc:
        raise _bad(path, meta, "method", f"{exc}; a newer icmh-hub, or a plug-in that registers it, may read it") from None
    return spec, method


def _check_points(path: str | os.PathLike, points: Any, allowed: Mapping[str, str]) -> dict[str, str]:
    """Points must be among those the method allows on this codec, each at its own module path:
    a file cannot hook another module (the entropy models, the last layer)."""
    shown = {"points": points}
    if not isinstance(points, dict) or (not points and allowed):
        raise _bad(path, shown, "points", f"a non-empty map from {sorted(allowed)} to module paths")
    for key, value in points.items():
        if allowed.get(key) != value:
            rule = f"{key} is not a point of this method" if key not in allowed else f"{key} is after {allowed[key]!r} on this codec"
            raise _bad(path, shown, "points", rule)
    return dict(points)


def _check_layout(path: str | os.PathLike, meta: Mapping[str, Any], layout: Mapping[str, Any]) -> None:
    """What the file says of its layout (N, M, ...) must be what the codec and config give."""
    for key, value in layout.items():
        if key in meta and meta[key] != value:
            raise _bad(path, meta, key, f"the codec and method give {value!r}")


def _read_tensors(path: str | os.PathLike, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The file's tensors, once their names and shapes are those the metadata implies; floats,
    all finite."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            _check_tensors_listed(path, expected, {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()})
            tensors = {name: handle.get_tensor(name) for name in expected}
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, AdapterFileError):
            raise
        raise AdapterFileError(f"{path} is truncated or damaged ({exc}); re-download or re-save it") from None
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() and not name.endswith("num_batches_tracked"):
            raise AdapterFileError(f"{path}: tensor {name} holds {tensor.dtype} values, not floats; the file is damaged")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise AdapterFileError(
                f"{path}: tensor {name} holds NaN or infinite values (a diverged training run, or a damaged "
                "file); these adapters cannot code anything"
            )
    return tensors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tensors_listed(path: str | os.PathLike, expected: dict[str, tuple], found: dict[str, tuple]) -> None:
    """The file lists exactly the tensors, of exactly the shapes, that its metadata implies."""
    if set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise AdapterFileError(
            f"{path} does not match its own metadata (missing {missing[:3]}, unexpected "
            f"{extra[:3]}); the file is damaged or was not written by icmh-hub"
        )
    for name, shape in found.items():
        if shape != expected[name]:
            raise AdapterFileError(
                f"{path}: tensor {name} has shape {shape}, its metadata implies {expected[name]}; the file is damaged"
            )
