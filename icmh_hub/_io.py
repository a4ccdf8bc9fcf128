"""File helpers every layer shares: atomic writes, sha256, the one state-dict reader, progress bars.

Atomic writes go to a uniquely named temporary file in the target's folder (so two processes
writing beside each other never share one) and are renamed onto the target only when complete;
a failed write removes its temporary file. A process killed mid-write leaves at most a hidden
``.NAME.*.partial`` file, which no reader ever picks up as NAME. ``replace=False`` publishes
without replacing: the temporary file is hard-linked to the target, which fails atomically if
the target exists, so of two writers racing for one name exactly one wins. The temporary file
is created with mode 0666 less the umask, and published with that mode (also when the code that
filled it replaced the file), as any new file of the user's would have it (``tempfile.mkstemp``
would leave 0600, readable by its owner only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import CheckpointError, IcmhError, InvalidArgumentError, MissingFileError, OutputExistsError

PARTIAL_SUFFIX = ".partial"
MAX_JSON_DEPTH = 32  # far beyond any index, trust record or adapter metadata we write
_PARTIAL_NAME_ROOM = 255 - len(".") - len(".12345678") - len(PARTIAL_SUFFIX)  # bytes of NAME in a temporary name
_CHECKPOINT_WRAPPERS = ("state_dict", "model")  # keys under which training scripts nest the weights


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """A fresh temporary path beside ``target``; renamed onto ``target`` when the block ends
    without an exception, removed when it raises (or is interrupted). ``replace=False``: an
    existing ``target`` (even one that appears while the block runs) raises OutputExistsError."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _fresh_file(target)
    mode = temporary.stat().st_mode & 0o777  # the umask's, which a writer that replaces the file may drop
    try:
        yield temporary
        if temporary.stat().st_mode & 0o777 != mode:
            temporary.chmod(mode)
        if replace:
            os.replace(temporary, target)
        else:
            _publish_new(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fresh_file(target: Path) -> Path:
    """Create a new, empty, uniquely named ``.NAME.XXXXXXXX.partial`` beside ``target``, with the
    umask's mode. NAME is cut short so that a target name of up to 255 bytes still fits."""
    stem = os.fsencode(target.name)[:_PARTIAL_NAME_ROOM].decode(errors="ignore")
    while True:
        temporary = target.parent / f".{stem}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary


def _publish_new(temporary: Path, target: Path) -> None:
    """Give ``temporary`` the name ``target`` unless that exists (a hard link never replaces)."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise OutputExistsError(f"{target} exists; pass --force (replace=True) to replace it") from None
    except OSError:  # a file system without hard links: check, then rename
        if target.exists():
            raise OutputExistsError(f"{target} exists; pass --force (replace=True) to replace it") from None
        os.replace(temporary, target)
    temporary.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)


def atomic_write_json(target: str | os.PathLike, data: Any) -> Path:
    """JSON with sorted keys and an indent, as every index, trust record and result file is written."""
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(target)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return found


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` deep (walked without recursion)."""
    level, depth = ([data] if isinstance(data, (dict, list)) else []), 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item) if isinstance(v, (dict, list))]
    return False


def parse_json(text: str | bytes, what: str, error: type[IcmhError] = InvalidArgumentError) -> Any:
    """JSON from a file someone else may have written (an index, trust.json, adapter metadata).

    A syntax error, a key twice in one object (the last would silently win) or lists and objects
    nested more than ``MAX_JSON_DEPTH`` deep is refused with ``error``: one line that names
    ``what``, never a RecursionError."""
    too_deep = False
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise error(f"{what} has the key {json.dumps(exc.args[0])[:80]} twice in one object; keep one") from None
    except RecursionError:
        too_deep = True
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{what} is not readable JSON ({' '.join(str(exc).split())[:200]}); fix or replace it") from None
    if too_deep or _deeper_than(data, MAX_JSON_DEPTH):
        raise error(f"{what} nests lists or objects more than {MAX_JSON_DEPTH} deep; it is not a file icmh-hub wrote")
    return data


def is_partial(path: Path) -> bool:
    """Whether ``path`` is an unfinished atomic write (never an input)."""
    return path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes) and the header's ``{``."""
    with open(path, "rb") as handle:
        return handle.read(9)[8:] == b"{"


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict[str, Any]:
    """The tensors of a safetensors file or of a torch checkpoint (loaded with
    ``weights_only=True``: no code in it runs), unwrapped from a ``state_dict`` / ``model`` entry,
    with DataParallel's ``module.`` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} file {str(path)!r} does not exist")
    try:
        if path.name.endswith(".safetensors") or _looks_like_safetensors(path):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors come in many types
        raise CheckpointError(
            f"{path} is not a readable {what} file ({type(exc).__name__}); give a safetensors file or a "
            "torch checkpoint that loads with weights_only=True (icmh-hub never unpickles code)"
        ) from None
    for key in _CHECKPOINT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path} holds no state_dict (found {type(state).__name__}); save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in state.items()}


def progress(
    items: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
    enabled: bool | None = None, initial: int = 0,
) -> Any:
    """A tqdm bar on stderr; ``enabled=None`` shows it only when stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, initial=initial, disable=None if enabled is None else not enabled,
                leave=False, dynamic_ncols=True)
