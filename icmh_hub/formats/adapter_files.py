"""Adapter files: one safetensors file per task adapter set, self-describing through its metadata.

safetensors holds tensors only (no pickle, nothing executes on load). Its ``__metadata__`` (a
str -> str map) says what the tensors fit: format and version, codec, quality, N, variant, d,
insertion points, and the task description (task, lambda, recipe, ...) as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._io import atomic_path, sha256_of
from ..core.adapter_set import AdapterSet, ScalableAdapters
from ..core.variants import SCALABLE_VARIANTS
from ..errors import AdapterFileError

FORMAT = "icmh-adapter"
FORMAT_VERSION = 1
_LAYOUT_KEYS = ("codec", "quality", "channels", "variant", "middle_dim", "points", "init")
_SCALABLE_KEYS = ("latent_channels", "mask_hidden")  # also in the files of the scalable variants


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
            f"{FORMAT_VERSION}; upgrade icmh-hub (pip install -U icmh-hub) or re-save the adapters"
        )
    try:
        meta = {key: json.loads(raw[key]) for key in _LAYOUT_KEYS}
        meta |= {key: json.loads(raw[key]) for key in _SCALABLE_KEYS if meta["variant"] in SCALABLE_VARIANTS}
        meta["info"] = json.loads(raw.get("info", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"{path} has damaged adapter metadata ({exc}); re-download or re-save it") from None
    return meta


def load_adapters(path: str | os.PathLike) -> AdapterSet:
    """Read an adapter file written by ``save_adapters`` into a new AdapterSet."""
    meta = read_metadata(path)
    info = meta.pop("info")
    try:
        kind = ScalableAdapters if meta["variant"] in SCALABLE_VARIANTS else AdapterSet
        adapters = kind(**meta, info=info)
    except (TypeError, ValueError, AttributeError) as exc:
        raise AdapterFileError(f"{path} has adapter metadata that makes no sense ({exc}); the file is damaged") from None
    expected = adapters.state_dict()
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = set(handle.keys())
            if names != set(expected):
                missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
                raise AdapterFileError(
                    f"{path} does not match its own metadata (missing {missing[:3]}, unexpected "
                    f"{extra[:3]}); the file is damaged or was not written by icmh-hub"
                )
            tensors = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFileError(f"{path} is truncated or damaged ({exc}); re-download or re-save it") from None
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise AdapterFileError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, its metadata implies "
                f"{tuple(expected[name].shape)}; the file is damaged"
            )
    adapters.load_state_dict(tensors)
    adapters.sha256 = sha256_of(path)
    return adapters
