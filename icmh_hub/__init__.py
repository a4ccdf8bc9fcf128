"""icmh-hub: task adapters (SFMA) that turn one frozen human-vision image codec into a codec for
machines as well, attached at runtime and removable bit for bit."""

from __future__ import annotations

from .adapter_files import load_adapters, read_metadata, save_adapters
from .adapter_set import AdapterSet, build_adapters
from .adapters import VARIANTS, Adapter, count_parameters
from .attach import AdaptedCodec, attach, detach
from .bd import bd_metric, bd_rate
from .codecs import CodecSpec, get_codec, list_codecs, register_codec
from .codec_io import decode, encode
from .convert import convert_reference
from .errors import AdapterFileError, AdapterMismatchError, AttachError, IcmhError, UnknownNameError
from .errors import BitstreamError, ImageFileError
from .loading import load
from .registry import Entry, find_by_sha256, list_entries, resolve

__version__ = "0.1.0"

__all__ = [
    "AdaptedCodec",
    "Adapter",
    "AdapterFileError",
    "AdapterMismatchError",
    "AdapterSet",
    "AttachError",
    "BitstreamError",
    "CodecSpec",
    "IcmhError",
    "ImageFileError",
    "UnknownNameError",
    "VARIANTS",
    "attach",
    "bd_metric",
    "bd_rate",
    "build_adapters",
    "convert_reference",
    "count_parameters",
    "decode",
    "detach",
    "encode",
    "get_codec",
    "list_codecs",
    "Entry",
    "find_by_sha256",
    "list_entries",
    "load",
    "resolve",
    "load_adapters",
    "read_metadata",
    "register_codec",
    "save_adapters",
]
