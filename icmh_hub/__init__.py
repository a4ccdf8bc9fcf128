"""icmh-hub: task adapters (SFMA) that turn one frozen human-vision image codec into a codec for
machines as well, attached at runtime and removable bit for bit.

The public names below are imported on first use (PEP 562), so ``import icmh_hub`` (and the
CLI's light commands) start without torch; the built-in codec families are declared at once.
The package's layers and their import rule: docs/layout.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import codecs as _codecs  # noqa: F401  (declares the built-in codecs; imports no torch)
from . import methods as _methods  # noqa: F401  (registers the built-in adapter methods; no torch either)

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "AdaptedCodec": "core.attach", "attach": "core.attach", "detach": "core.attach",
    "Adapter": "core.adapters", "count_parameters": "core.adapters",
    "VARIANTS": "core.variants",
    "MethodConfig": "core.methods", "get_method": "core.methods", "list_methods": "core.methods",
    "register_method": "core.methods",
    "AdapterSet": "core.adapter_set", "build_adapters": "core.adapter_set",
    "CodecSpec": "core.spec", "get_codec": "core.spec", "list_codecs": "core.spec", "register_codec": "core.spec",
    "TaskFeatures": "core.recognition", "build_classifier": "core.recognition", "build_detector": "core.recognition",
    "register_task_model": "core.task_models", "build_task_model": "core.task_models", "task_model_names": "core.task_models",
    "load_adapters": "formats.adapter_files", "read_metadata": "formats.adapter_files", "save_adapters": "formats.adapter_files",
    "convert_reference": "formats.reference",
    "Entry": "hub.index", "find_by_sha256": "hub.index", "list_entries": "hub.index", "resolve": "hub.index",
    "load": "assemble", "build_base": "assemble", "from_hub": "assemble",
    "encode": "coding", "decode": "coding",
    "Recipe": "training.recipes", "get_recipe": "training.recipes",
    "FullFinetuner": "training.trainer", "Trainer": "training.trainer", "TrainOptions": "training.trainer",
    "bd_metric": "evaluation.bd", "bd_rate": "evaluation.bd",
}
_ERRORS = (
    "AdapterFileError", "AdapterMismatchError", "AttachError", "BDError", "BitstreamError", "CheckpointError",
    "DataError", "DownloadError", "IcmhError", "ImageFileError", "ImageTooLargeError", "IntegrityError",
    "InvalidArgumentError", "MissingDependencyError", "MissingFileError", "NumericalError", "OutputError",
    "OutputExistsError", "RegistryError", "TrainingError", "UnknownNameError",
)
_EXPORTS |= {name: "errors" for name in _ERRORS}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'icmh_hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .assemble import build_base, from_hub, load
    from .coding import decode, encode
    from .core.adapter_set import AdapterSet, build_adapters
    from .core.adapters import Adapter, count_parameters
    from .core.attach import AdaptedCodec, attach, detach
    from .core.recognition import TaskFeatures, build_classifier, build_detector
    from .core.spec import CodecSpec, get_codec, list_codecs, register_codec
    from .core.methods import MethodConfig, get_method, list_methods, register_method
    from .core.task_models import build_task_model, register_task_model, task_model_names
    from .core.variants import VARIANTS
    from .errors import (
        AdapterFileError, AdapterMismatchError, AttachError, BDError, BitstreamError, CheckpointError, DataError,
        DownloadError, IcmhError, ImageFileError, ImageTooLargeError, IntegrityError, InvalidArgumentError,
        MissingDependencyError, MissingFileError, NumericalError, OutputError, OutputExistsError, RegistryError,
        TrainingError, UnknownNameError,
    )
    from .evaluation.bd import bd_metric, bd_rate
    from .formats.adapter_files import load_adapters, read_metadata, save_adapters
    from .formats.reference import convert_reference
    from .hub.index import Entry, find_by_sha256, list_entries, resolve
    from .training.recipes import Recipe, get_recipe
    from .training.trainer import FullFinetuner, Trainer, TrainOptions
