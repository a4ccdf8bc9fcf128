"""Keeping freed memory mapped: the allocator's half of the fastest CPU path.

glibc hands every block above its mmap threshold (at most 32 MiB; a 128-channel feature map of a
768x512 image at its first stage is 50 MB) back to the kernel when it is freed, so the next one
is mapped afresh and the kernel zeroes each of its pages on first touch, a page fault per 4 KiB.
A codec that allocates and frees such maps layer after layer spends much of its time there.
``keep_freed_memory()`` has glibc take those blocks from its heap and keep the heap, so the same
pages serve the next map. No torch here: the CLI's commands that code nothing import it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator

# mallopt's option numbers (glibc's malloc.h) and the values the block sets and restores
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEPT = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}  # no mmap'd blocks; never shrink the heap
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
_lock = threading.Lock()
_open_blocks = 0


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (``mallopt``'s options are glibc's), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _open_or_close(libc: ctypes.CDLL, step: int) -> None:
    """Count a block opened (+1) or closed (-1): the outermost sets ``KEPT`` and, when it ends,
    glibc's defaults, and returns the free memory to the system."""
    global _open_blocks
    with _lock:
        _open_blocks += step
        if _open_blocks == (1 if step > 0 else 0):
            for option, value in (KEPT if step > 0 else GLIBC_DEFAULTS).items():
                libc.mallopt(option, value)
            if step < 0:
                libc.malloc_trim(0)


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Inside the block, memory the process frees stays mapped for its next allocations; yields
    whether it applies (True with glibc, the C library of most Linux systems).

    glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh mappings that it
    unmaps on free, so a codec that allocates and frees 50 MB feature maps pays the kernel for
    zeroing every page of each one again (a page fault per 4 KiB). Inside the block glibc takes
    every block from its heap and does not shrink the heap, so the pages are reused; the process
    keeps its peak memory mapped until the block ends. When the outermost block ends, glibc's
    defaults (``M_MMAP_MAX``, ``M_TRIM_THRESHOLD``) are set back and the free memory is returned
    to the system (``malloc_trim``); glibc's dynamic mmap threshold stays at the value it had
    reached (glibc offers no way to resume its adjustment). Large tensors made inside the block
    live in the heap, not in mappings of their own: one freed after the block has ended (a codec
    or an output kept past it) goes back to the heap, where its pages may stay with the process
    for later allocations rather than go back to the kernel at once (the next block's end trims
    them).

    Process-wide: it affects every thread's allocations while any block is open. Elsewhere (macOS,
    Windows, musl) the block does nothing and yields False: those allocators have other settings.
    With jemalloc or tcmalloc loaded by ``LD_PRELOAD`` (PyTorch's CPU tuning guide suggests
    either) freed memory is kept by the allocator itself and the block changes nothing that matters.
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    _open_or_close(libc, 1)
    try:
        yield True
    finally:
        _open_or_close(libc, -1)
