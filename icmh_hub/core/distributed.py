"""Several processes, one job: rank, world size, the process group and the few collectives that
training and evaluation share (both import this; neither imports the other).

A run is distributed when a launcher such as torchrun started it: ``WORLD_SIZE`` (above 1),
``RANK``, ``LOCAL_RANK`` and the rendezvous (``MASTER_ADDR`` / ``MASTER_PORT``) are in the
environment. ``setup(device)`` then joins the process group once (NCCL on CUDA, one GPU per local
rank; gloo on CPU) and gives this rank's device; without a launcher it is a one-process world and
nothing is initialised. A process group that the caller initialised itself is used as it is.

Failures: a rank that raises tells the others at the next agreement (``agree``), and they stop
with one line naming it. Callers agree before any collective that could wait for a rank that
already failed (DistributedDataParallel's forward can broadcast), so a failure anywhere reaches
every rank within one step. A rank that dies (killed, out of memory) leaves the others blocked in
a collective until the group's timeout (``ICMH_HUB_DIST_TIMEOUT`` seconds, default 600), which
then ends them with an error rather than a hang (gloo usually notices the closed connection at once).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import DistributedError, InvalidArgumentError

TIMEOUT_ENV = "ICMH_HUB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0  # long enough for a checkpoint write or a slow rank's download
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``size``-th one, starting at ``rank``."""
        return list(items[self.rank :: self.size])


def launched_size() -> int:
    """The number of ranks of this job: the process group's, else the launcher's ``WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(text))
    except ValueError:
        raise InvalidArgumentError(f"WORLD_SIZE={text!r} is not a number of processes; start the ranks with torchrun") from None


def launched() -> bool:
    """Whether a launcher (torchrun, or the same variables set by hand) started several processes."""
    return launched_size() > 1


def timeout() -> datetime.timedelta:
    """How long a collective waits for the other ranks (``ICMH_HUB_DIST_TIMEOUT``, seconds)."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidArgumentError(f"{TIMEOUT_ENV}={text!r}: give the rank timeout in seconds, e.g. {TIMEOUT_ENV}=600")
    return datetime.timedelta(seconds=seconds)


def _rank_device(device: str | torch.device | None, local_rank: int, ranks_here: int) -> torch.device:
    """This rank's device: ``cuda`` (or the default, with CUDA present) means GPU ``LOCAL_RANK``."""
    wanted = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.type != "cuda":
        return wanted
    if wanted.index is not None and ranks_here > 1:
        raise InvalidArgumentError(
            f"--device {wanted} names one GPU, but {ranks_here} ranks run on this node; give --device cuda "
            "(rank r uses GPU r) or CUDA_VISIBLE_DEVICES"
        )
    if wanted.index is not None:
        return wanted
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise InvalidArgumentError(f"local rank {local_rank} has no GPU of its own ({count} visible); start at most {count} processes per node")
    return torch.device("cuda", local_rank)


def current() -> World:
    """The world as it is now (one process unless a process group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local, device)


def setup(device: str | torch.device | None = None) -> World:
    """Join the launcher's process group (once) and return the world with this rank's device.

    Without a launcher: a one-process world on ``device`` (default: CUDA when available)."""
    if dist.is_available() and dist.is_initialized():
        world = current()
        return World(world.rank, world.size, world.local_rank, _rank_device(device, world.local_rank, 1) if device else world.device)
    if not launched():
        return World(device=_rank_device(device, 0, 1))
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; run one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", launched_size()))
    rank_device = _rank_device(device, local_rank, ranks_here)
    if rank_device.type == "cuda":
        torch.cuda.set_device(rank_device)
    backend = "nccl" if rank_device.type == "cuda" else "gloo"
    bind = {"device_id": rank_device} if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters else {}
    try:
        dist.init_process_group(backend, timeout=timeout(), **bind)
    except (RuntimeError, ValueError, KeyError) as exc:  # rendezvous failures come in several types
        raise DistributedError(f"could not join the {backend} process group ({type(exc).__name__}: {exc}); "
                               "start the ranks with torchrun (or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)") from None
    atexit.register(_shutdown)
    world = current()
    return World(world.rank, world.size, local_rank, rank_device)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _error_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if text else type(error).__name__


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective (a rank died, the timeout passed) into one clear DistributedError
    (out-of-memory errors pass through as they are)."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed's errors (DistBackendError, gloo's, ...) are RuntimeErrors
        if "out of memory" in str(exc).lower():
            raise
        line = _error_line(exc)
        cut = line.find(". ")
        rank = dist.get_rank() if dist.is_initialized() else 0
        raise DistributedError(
            f"{what} failed on rank {rank} ({line[: cut + 1] if cut > 0 else line[:300]}); if another rank crashed or "
            f"was killed, its output says why (ranks wait {timeout().total_seconds():.0f} s for each other: {TIMEOUT_ENV})"
        ) from None


def agree(error: BaseException | None, world: World | None = None, what: str = "") -> None:
    """Every rank says whether it failed; if any did, every rank raises: the failed rank its own
    error, the others a DistributedError that names the failed rank and says why. ``what`` says
    what the ranks were doing (for the others' line). One small all_reduce of a failure flag
    when no rank failed, then the gather of the reasons; a no-op in one process."""
    world = world or current()
    if not world.distributed:
        if error is not None:
            raise error
        return
    flag = torch.tensor([float(error is not None)], device=world.device)
    with collective(what or "comparing outcomes"):
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    if flag.item() == 0:
        return
    failures: list[Any] = [None] * world.size
    with collective(what or "comparing outcomes"):
        dist.all_gather_object(failures, None if error is None else (type(error).__name__, _error_line(error)))
    failed = [(rank, failure) for rank, failure in enumerate(failures) if failure is not None]
    if not failed:
        return
    if error is not None:
        raise error
    rank, (kind, line) = failed[0]
    during = f" while {what}" if what else ""
    raise DistributedError(f"rank {rank} failed{during} ({kind}: {line}); rank {world.rank} stops too")


def run_on_main(function: Callable[[], T], world: World | None = None, what: str = "") -> T | None:
    """``function()`` on rank 0 only (writing files, say); every rank raises if it failed."""
    world = world or current()
    result, error = None, None
    if world.main:
        try:
            result = function()
        except Exception as exc:  # handed to every rank by agree
            error = exc
    agree(error, world, what)
    return result


def broadcast(value: T | None, world: World | None = None) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    world = world or current()
    if not world.distributed:
        return value  # type: ignore[return-value]
    box = [value]
    with collective("receiving data from rank 0"):
        dist.broadcast_object_list(box, src=0, device=world.device if world.device.type == "cuda" else None)
    return box[0]


def gather(value: T, world: World | None = None) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (any picklable object)."""
    world = world or current()
    if not world.distributed:
        return [value]
    values: list[Any] = [None] * world.size
    with collective("gathering results"):
        dist.all_gather_object(values, value)
    return values


def all_sum(values: torch.Tensor, world: World | None = None, what: str = "adding up") -> torch.Tensor:
    """The element-wise sum of ``values`` over ranks (a small tensor on this rank's device)."""
    world = world or current()
    if world.distributed:
        with collective(what):
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
