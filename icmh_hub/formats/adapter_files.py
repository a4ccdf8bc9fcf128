"""Adapter files: one safetensors file per task adapter set, self-describing through its metadata.

safetensors holds tensors only (no pickle, nothing executes on load). Its ``__metadata__`` (a
str -> str map) says what the tensors fit: format and version, codec, quality, N, variant, d,
insertion points, and the task description (task, lambda, recipe, ...) as JSON. Files of the
scalable variants also record M (the latent channels) and the mask generator's width.

Loading trusts nothing in the file: the metadata's types and ranges are checked (N must be the
codec's at that quality), the adapters it describes are built on the meta device (no memory)
and their tensor names and shapes compared with those the file lists, all before anything is
allocated, so an absurd ``middle_dim`` costs nothing; tensors that are not finite are refused by
name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._io import atomic_path, sha256_of
from ..core.adapter_set import STAGES, AdapterSet, ScalableAdapters, point_key
from ..core.spec import SIDES, CodecSpec, check_scalable, get_codec
from ..core.variants import ALL_VARIANTS, INITS, SCALABLE_VARIANTS
from ..errors import AdapterFileError, IcmhError, InvalidArgumentError

FORMAT = "icmh-adapter"
FORMAT_VERSION = 1
_LAYOUT_KEYS = ("codec", "quality", "channels", "variant", "middle_dim", "points", "init")
_SCALABLE_KEYS = ("latent_channels", "mask_hidden")  # also in the files of the scalable variants
MAX_MIDDLE_DIM = 4096
_POINT_KEYS = tuple(point_key(side, stage) for side in SIDES for stage in STAGES)


def save_adapters(adapters: AdapterSet, path: str | os.PathLike, **info: Any) -> Path:
    """Write ``adapters`` to ``path`` (safetensors); keyword arguments are added to its info.

    The file is written next to its destination first and renamed into place, so a crash never
    leaves a truncated adapter file behind.
    """
    if not isinstance(adapters, AdapterSet):
        raise AdapterFileError(f"save_adapters takes an AdapterSet, got {type(adapters).__name__}")
    adapters.info.update(info)
    layout = adapters.layout() | {"init": adapters.init}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    metadata |= {key: json.dumps(layout[key]) for key in _LAYOUT_KEYS + _SCALABLE_KEYS if key in layout}
    metadata["info"] = json.dumps(adapters.info, sort_keys=True, default=str)
    tensors = {name: t.detach().cpu().contiguous() for name, t in adapters.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of an adapter file (layout keys and ``info``), checked for format."""
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
    try:
        meta = {key: json.loads(raw[key]) for key in _LAYOUT_KEYS}
        meta |= {key: json.loads(raw[key]) for key in _SCALABLE_KEYS if _is_scalable(meta["variant"])}
        meta["info"] = json.loads(raw.get("info", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"{path} has damaged adapter metadata ({exc}); re-download or re-save it") from None
    return meta


def load_adapters(path: str | os.PathLike) -> AdapterSet:
    """Read an adapter file written by ``save_adapters`` into a new AdapterSet (a ScalableAdapters
    for the scalable variants)."""
    meta = read_metadata(path)
    info = meta.pop("info")
    _check_layout(path, meta)
    kind = ScalableAdapters if _is_scalable(meta["variant"]) else AdapterSet
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            expected = {name: tuple(t.shape) for name, t in kind(**meta, info=info).state_dict().items()}
    except (TypeError, ValueError, AttributeError, KeyError, IcmhError) as exc:
        raise AdapterFileError(f"{path} has adapter metadata that makes no sense ({exc}); the file is damaged") from None
    try:
        with safe_open(str(path), framework="pt") as handle:
            _check_tensors_listed(path, expected, {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()})
            tensors = {name: handle.get_tensor(name) for name in expected}
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, AdapterFileError):
            raise
        raise AdapterFileError(f"{path} is truncated or damaged ({exc}); re-download or re-save it") from None
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise AdapterFileError(f"{path}: tensor {name} holds {tensor.dtype} values, not floats; the file is damaged")
        if not torch.isfinite(tensor).all():
            raise AdapterFileError(
                f"{path}: tensor {name} holds NaN or infinite values (a diverged training run, or a damaged "
                "file); these adapters cannot code anything"
            )
    adapters = kind(**meta, info=info)
    adapters.load_state_dict(tensors)
    adapters.sha256 = sha256_of(path)
    return adapters


def _check_layout(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Types and ranges of the layout metadata, before anything is built from it."""

    def bad(key: str, rule: str) -> AdapterFileError:
        return AdapterFileError(f"{path}: adapter metadata {key}={meta.get(key)!r} is invalid ({rule}); the file is damaged")

    codec, quality = meta.get("codec"), meta.get("quality")
    try:
        spec = get_codec(codec)
    except KeyError:
        raise bad("codec", "not a codec this icmh-hub knows") from None
    if not _is_int(quality) or quality not in spec.channels:
        raise bad("quality", f"one of {list(spec.qualities)} for {spec.name}")
    if not _is_int(meta.get("channels")) or meta["channels"] != spec.channels[quality]:
        raise bad("channels", f"{spec.name} q{quality} has N={spec.channels[quality]}")
    if not _is_int(meta.get("middle_dim")) or not 1 <= meta["middle_dim"] <= MAX_MIDDLE_DIM:
        raise bad("middle_dim", f"an integer from 1 to {MAX_MIDDLE_DIM}")
    if not isinstance(meta.get("variant"), str) or meta["variant"] not in ALL_VARIANTS:
        raise bad("variant", f"one of {sorted(ALL_VARIANTS)}")
    if meta.get("init") not in INITS:
        raise bad("init", f"one of {list(INITS)}")
    if _is_scalable(meta["variant"]):
        _check_scalable_layout(meta, spec, quality, bad)
    points = meta.get("points")
    empty_allowed = _is_scalable(meta["variant"]) and SCALABLE_VARIANTS[meta["variant"]] is None
    if not isinstance(points, dict) or (not points and not empty_allowed) or not all(
        key in _POINT_KEYS and isinstance(value, str) and 0 < len(value) <= 200 for key, value in points.items()
    ):
        raise bad("points", f"a non-empty map from {list(_POINT_KEYS)} to module paths")


def _check_scalable_layout(meta: dict[str, Any], spec: CodecSpec, quality: int, bad: Any) -> None:
    """The codec must code in layers, M must be its M at that quality, the mask generator of a sane width."""
    try:
        check_scalable(spec)
    except InvalidArgumentError:
        raise bad("variant", f"{spec.name} has no scalable coding") from None
    latent = spec.latent_channels[quality]
    if not _is_int(meta.get("latent_channels")) or meta["latent_channels"] != latent:
        raise bad("latent_channels", f"{spec.name} q{quality} has M={latent}")
    if not _is_int(meta.get("mask_hidden")) or not 1 <= meta["mask_hidden"] <= MAX_MIDDLE_DIM:
        raise bad("mask_hidden", f"an integer from 1 to {MAX_MIDDLE_DIM}")


def _is_scalable(variant: Any) -> bool:
    return isinstance(variant, str) and variant in SCALABLE_VARIANTS


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
