"""Tiled coding: an image larger than the codec codes at once, as independent tiles in one .icmh file.

Coding memory grows with the pixels coded at once (``icmh_hub.coding.pixel_limit``), so an image
above that limit is cut into tiles (row by row; the last row and column hold what is left) and
each tile is coded as an image of its own: its own padding, latents and entropy-coded strings,
one record per tile in the file (``icmh_hub.formats.bitstream``, version 3). Decoding fills the
output tile by tile, so the codec's memory is a tile's, whatever the image's; what grows with
the image is only the image itself (input and output pixels, ``IMAGE_BYTES_PER_PIXEL``).

Tiles are independent (no context crosses a border): any tile decodes alone, tiles can be coded
in parallel processes, and the bytes are the same however many processes code them. The price is
rate (each tile restarts the entropy models' context) and seams (no smoothing across borders);
docs/tiling.md measures both. Inner tile sides are multiples of the codec's pad multiple, so only
the last row and column are padded, as a whole image would be.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InvalidArgumentError
from .formats.bitstream import Header

# What tiling holds per pixel of the whole image besides the codec's tile memory: the image read
# as float32 (12 B), the decoded float32 output (12 B), 8-bit copies on the way in and out (6 B),
# rounded up.
IMAGE_BYTES_PER_PIXEL = 32
TILE_SHARE = 0.5  # of the pixels coded at once: what a default tile takes (the rest is the image's)

Part = tuple[Any, Any]  # (strings, shape) of one tile, as compress() gives them for one image


def default_tile(max_pixels: int, multiple: int) -> int:
    """The side of the square tiles for an image above ``max_pixels``: the largest multiple of
    ``multiple`` whose square is at most ``TILE_SHARE`` of ``max_pixels`` (at least one multiple)."""
    return max(multiple, math.isqrt(int(max_pixels * TILE_SHARE)) // multiple * multiple)


def image_limit(free_mb: float) -> int:
    """The most pixels a tiled image may have when ``free_mb`` is left beside the codec and a
    tile's coding (the image's own buffers, ``IMAGE_BYTES_PER_PIXEL``)."""
    return max(0, int(free_mb * 1e6 / IMAGE_BYTES_PER_PIXEL))


@dataclass(frozen=True)
class Tiling:
    """When and how an encoder tiles. ``side``: None tiles images above ``max_pixels`` with the
    default tile; a number tiles every image with a side longer than that; False never tiles."""

    side: int | bool | None
    max_pixels: int
    multiple: int

    def __post_init__(self) -> None:
        if self.side is None or self.side is False:
            return
        if isinstance(self.side, bool) or not isinstance(self.side, int) or self.side < 1 or self.side % self.multiple:
            raise InvalidArgumentError(f"tile size must be a positive multiple of {self.multiple} (the codec's pad multiple), got {self.side!r}")
        if self.side * self.side > self.max_pixels:
            raise InvalidArgumentError(
                f"tiles of {self.side}x{self.side} are more pixels than the limit of {self.max_pixels} coded at once; "
                f"give a tile of at most {math.isqrt(self.max_pixels) // self.multiple * self.multiple}, or a larger --max-pixels"
            )

    @property
    def tile_pixels(self) -> int:
        """Pixels of the largest tile this tiling codes (``max_pixels`` when it never tiles)."""
        if self.side is False:
            return self.max_pixels
        return (self.side or default_tile(self.max_pixels, self.multiple)) ** 2

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        """(tile height, tile width) for an image of this size, or None to code it whole."""
        if self.side is False or (self.side is None and height * width <= self.max_pixels):
            return None
        side = self.side or default_tile(self.max_pixels, self.multiple)
        if height <= side and width <= side:
            return None
        return min(side, height), min(side, width)


def crops(x: torch.Tensor, header: Header) -> list[torch.Tensor]:
    """The tiles of a (1, 3, H, W) image, in the header's order (views, no copies)."""
    return [x[..., top : top + height, left : left + width] for top, left, height, width in header.tile_boxes()]


_WORK: tuple[Callable[[torch.Tensor], Part], list[torch.Tensor]] | None = None  # what forked workers code


def code_tiles(code: Callable[[torch.Tensor], Part], x: torch.Tensor, header: Header, workers: int = 1) -> list[Part]:
    """``code`` every tile of ``x``, in ``workers`` processes (forked, one thread each: they share
    the codec's weights with this process). The parts are the same for any ``workers``."""
    tiles = crops(x, header)
    if workers <= 1 or len(tiles) == 1:
        return [code(tile) for tile in tiles]
    if "fork" not in multiprocessing.get_all_start_methods():
        raise InvalidArgumentError("workers > 1 needs processes started by fork (Linux, macOS); use workers=1 here")
    global _WORK
    _WORK = (code, tiles)
    try:
        with ProcessPoolExecutor(min(workers, len(tiles)), multiprocessing.get_context("fork"), _one_thread) as pool:
            return list(pool.map(_code_tile, range(len(tiles))))
    finally:
        _WORK = None


def _one_thread() -> None:
    torch.set_num_threads(1)


def _code_tile(index: int) -> Part:
    code, tiles = _WORK
    return code(tiles[index])


def decode_tiles(decode: Callable[[Header, Any, Any], torch.Tensor], header: Header,
                 parts: list[tuple[Header, Any, Any]]) -> torch.Tensor:
    """The (1, 3, H, W) image of a tiled file, ``decode`` (tile header, strings, shape -> the
    tile's pixels) called tile after tile into the output."""
    image = torch.empty(1, 3, header.height, header.width)
    for (top, left, height, width), part in zip(header.tile_boxes(), parts):
        image[..., top : top + height, left : left + width] = decode(*part)
    return image
