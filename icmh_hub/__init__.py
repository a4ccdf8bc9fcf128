"""icmh-hub: task adapters (SFMA) that turn one frozen human-vision image codec into a codec for
machines as well, attached at runtime and removable bit for bit."""

from __future__ import annotations

from .adapter_files import load_adapters, read_metadata, save_adapters
from .adapter_set import AdapterSet, build_adapters
from .adapters import VARIANTS, Adapter, count_parameters
from .attach import AdaptedCodec, attach, detach
from .bd import bd_metric, bd_rate
from .codec_io import decode, encode
from .codecs import CodecSpec, get_codec, list_codecs, register_codec
from .convert import convert_reference
from .errors import (
    AdapterFileError,
    AdapterMismatchError,
    AttachError,
    BitstreamError,
    DownloadError,
    IcmhError,
    ImageFileError,
    IntegrityError,
    RegistryError,
    UnknownNameError,
)
from .loading import load
from .recipes import Recipe, get_recipe
from .registry import Entry, find_by_sha256, list_entries, resolve
from .task_models import TaskFeatures, build_classifier, build_detector
from .train import FullFinetuner, Trainer

__version__ = "0.1.0"

__all__ = [
    "AdaptedCodec",
    "Adapter",
    "AdapterFileError",
    "AdapterMismatchError",
    "AdapterSet",
    "attach",
    "AttachError",
    "bd_metric",
    "bd_rate",
    "BitstreamError",
    "build_adapters",
    "build_classifier",
    "build_detector",
    "CodecSpec",
    "convert_reference",
    "count_parameters",
    "decode",
    "detach",
    "DownloadError",
    "encode",
    "Entry",
    "find_by_sha256",
    "FullFinetuner",
    "get_codec",
    "get_recipe",
    "IcmhError",
    "ImageFileError",
    "IntegrityError",
    "list_codecs",
    "list_entries",
    "load",
    "load_adapters",
    "read_metadata",
    "Recipe",
    "register_codec",
    "RegistryError",
    "resolve",
    "save_adapters",
    "TaskFeatures",
    "Trainer",
    "UnknownNameError",
    "VARIANTS",
]
