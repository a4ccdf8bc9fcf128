"""Exceptions of icmh-hub.

Every error a user can cause is one of these, with a message that says what went wrong and
what to do about it. The CLI prints the message on one line and exits with status 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class IcmhError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, mismatch)."""


class UnknownNameError(IcmhError, KeyError):
    """An unknown codec, task, quality or entry name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AdapterFileError(IcmhError):
    """An adapter file that cannot be read: not safetensors, truncated, wrong format."""


class AdapterMismatchError(IcmhError):
    """Adapters that do not fit the codec they are attached to."""


class AttachError(IcmhError):
    """Attaching, switching or detaching adapters was asked for in a state that forbids it."""


class RegistryError(IcmhError):
    """A registry index or entry that cannot be used as asked (bad index file, recipe-only entry)."""


class DownloadError(IcmhError):
    """A file that could not be fetched: no network and not cached, missing on the Hub, ..."""


class IntegrityError(IcmhError):
    """A downloaded or cached file whose sha256 (or size) is not the pinned one; it was removed."""


class BitstreamError(IcmhError):
    """A .icmh bitstream that cannot be decoded: damaged, truncated, unknown, or mismatched."""


class ImageFileError(IcmhError):
    """An input that is not a readable image, or an image mode icmh-hub cannot code."""


def unknown_name(kind: str, name: object, known: Iterable[object], hint: str = "") -> UnknownNameError:
    """Build an UnknownNameError that lists the closest known names, then all of them."""
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean {', '.join(repr(c) for c in close)}?"
    message += f" Known: {', '.join(known) if known else '(none)'}."
    if hint:
        message += f" {hint}"
    return UnknownNameError(message)
