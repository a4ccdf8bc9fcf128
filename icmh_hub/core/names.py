"""Names that come from files and arguments (task, codec, variant, method): checked, and printed safely.

A name travels into file names, index keys, trust records and terminal lines, so it is held to
a small character set (``A-Z a-z 0-9 _ + -``) and at most ``MAX_NAME_LENGTH`` characters: no
dot or slash, so never a path, a hidden file or a file suffix. Anything printed that
came from a file we did not write goes through ``escaped`` first, so a crafted name cannot send
escape sequences to the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import InvalidArgumentError

MAX_NAME_LENGTH = 64
NAME_RULE = f"letters, digits, _ + - only, at most {MAX_NAME_LENGTH} characters"
_NAME = re.compile(r"[A-Za-z0-9_+-]+")
_METHOD_NAME = re.compile(r"[A-Za-z0-9_+>-]+")  # method names may also hold ">" (the ablation "sma->fma")


def escaped(text: object, limit: int | None = None) -> str:
    """``text`` with every unprintable character (escapes, NUL, newlines) written as a Python
    escape (``\\x1b``), cut to ``limit`` characters if given: safe to print on one line."""
    text = str(text)
    shown = text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if limit is None or len(shown) <= limit else shown[: limit - 3] + "..."


def is_name(value: object) -> bool:
    """Whether ``value`` is a valid name (``check_name`` without the message)."""
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and _NAME.fullmatch(value) is not None


def is_method_name(value: object) -> bool:
    """Whether ``value`` is a valid method name: a name that may also hold ">" ("sma->fma")."""
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and _METHOD_NAME.fullmatch(value) is not None


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a valid ``kind`` name (see the module doc), else InvalidArgumentError saying why."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"a {kind} name must be a string such as 'cls', got {type(value).__name__} {escaped(repr(value), 80)}")
    problem = (
        "is empty" if not value
        else f"is {len(value)} characters long" if len(value) > MAX_NAME_LENGTH
        else "holds other characters" if not _NAME.fullmatch(value)
        else ""
    )
    if problem:
        raise InvalidArgumentError(f"{kind} name '{escaped(value, 80)}' {problem}; a name has {NAME_RULE}, e.g. 'cls'")
    return value


def check_names(kind: str, value: object) -> list[str]:
    """One name or a list / tuple of names (``load(task=...)``), each checked; None gives []."""
    if value is None:
        return []
    if isinstance(value, str):
        return [check_name(kind, value)]
    if not isinstance(value, Sequence):
        raise InvalidArgumentError(f"give the {kind} as a name or a list of names, got {type(value).__name__} {escaped(repr(value), 80)}")
    return [check_name(kind, item) for item in value]
