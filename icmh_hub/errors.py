"""Every exception icmh-hub raises on purpose.

Each says what went wrong and what to do about it; the CLI prints it on one line and exits with
status 1. Each also inherits the builtin exception a Python user would catch for that kind of
problem (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file, ``OSError``
for a failed download, ...), as huggingface_hub's errors do, so ``except ValueError`` keeps
working around our calls.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

SHOWN_NAMES = 8  # known names an UnknownNameError lists before "and N more"


class IcmhError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, mismatch)."""


class UnknownNameError(IcmhError, KeyError):
    """An unknown codec, task, quality, variant or entry name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(IcmhError, ValueError):
    """A value given to a function or a flag that is out of range or does not fit the others."""


class MissingFileError(IcmhError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputExistsError(IcmhError, FileExistsError):
    """An output that exists already (or is one of the inputs) and was not asked to be replaced."""


class MissingDependencyError(IcmhError, ImportError):
    """An optional package (detectron2, ...) that a requested feature needs is not installed."""


class AdapterFileError(IcmhError, ValueError):
    """An adapter file that cannot be read: not safetensors, truncated, wrong format."""


class AdapterMismatchError(IcmhError, ValueError):
    """Adapters that do not fit the codec they are attached to."""


class AttachError(IcmhError, RuntimeError):
    """Attaching, switching or detaching adapters was asked for in a state that forbids it."""


class RegistryError(IcmhError, ValueError):
    """A registry index or entry that cannot be used as asked (bad index file, recipe-only entry)."""


class DownloadError(IcmhError, OSError):
    """A file that could not be fetched: no network and not cached, missing on the Hub, ..."""


class IntegrityError(IcmhError, OSError):
    """A downloaded or cached file whose sha256 (or size) is not the pinned one; it was removed."""


class CheckpointError(IcmhError, ValueError):
    """A weights or checkpoint file that cannot be read, or that does not fit its model."""


class BitstreamError(IcmhError, ValueError):
    """A .icmh bitstream that cannot be decoded: damaged, truncated, unknown, or mismatched."""


class ImageFileError(IcmhError, ValueError):
    """An input that is not a readable image, or an image mode icmh-hub cannot code."""


class ImageTooLargeError(IcmhError, ValueError):
    """An image (to code, or named by a .icmh header) larger than the pixel limit that keeps coding
    within its memory budget; the message names the limit and how to raise it."""


class NumericalError(IcmhError, ArithmeticError):
    """A codec (or its adapters) computed values that cannot be coded or shown: NaN or infinite
    latents, scales or pixels, or latents beyond the entropy coder's range."""


class OutputError(IcmhError, OSError):
    """An output that cannot be written: a read-only folder, a file where a folder should be, a full disk."""


class DataError(IcmhError, ValueError):
    """Training or evaluation data that cannot be used (empty folder, bad annotations, ...)."""


class TrainingError(IcmhError, RuntimeError):
    """A training run that cannot go on (the loss became NaN, a checkpoint of another run, ...)."""


class BDError(IcmhError, ValueError):
    """Curves that a Bjontegaard delta cannot be computed from."""


class DistributedError(IcmhError, RuntimeError):
    """A multi-process run that cannot go on: another rank failed, or the ranks could not meet."""


def unknown_name(kind: str, name: object, known: Iterable[object], hint: str = "") -> UnknownNameError:
    """Build an UnknownNameError that lists the closest known names, then the known ones (at
    most ``SHOWN_NAMES``, the closest first, with how many more there are)."""
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean {', '.join(repr(c) for c in close)}?"
    if len(known) > SHOWN_NAMES:
        nearest = difflib.get_close_matches(str(name), known, n=SHOWN_NAMES, cutoff=0.0)
        message += f" Known: {', '.join(nearest)} and {len(known) - len(nearest)} more."
    else:
        message += f" Known: {', '.join(known) if known else '(none)'}."
    if hint:
        message += f" {hint}"
    return UnknownNameError(message)
