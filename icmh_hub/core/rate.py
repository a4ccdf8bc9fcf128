"""Bits per pixel, the two ways: estimated from likelihoods (as the paper reports) and actual,
from the entropy-coded strings that ``compress()`` returns."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


def estimated_bits(likelihoods: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Total bits the entropy model expects for all latents (sum of -log2 likelihood), per batch."""
    return sum(-torch.log2(lk).flatten(1).sum(dim=1) for lk in likelihoods.values())


def estimated_bpp(likelihoods: Mapping[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Mean over the batch of estimated bits / pixels (differentiable: the training rate term)."""
    return estimated_bits(likelihoods).mean() / num_pixels


def string_bytes(strings: Iterable) -> int:
    """Total length of the byte strings in CompressAI's nested ``strings`` lists."""
    if isinstance(strings, (bytes, bytearray)):
        return len(strings)
    return sum(string_bytes(s) for s in strings)


def actual_bpp(strings: Iterable, num_pixels: int) -> float:
    """Bits per pixel of the real bitstreams (for one image: pass its strings)."""
    return string_bytes(strings) * 8 / num_pixels


def bits_per_pixel(num_bytes: int, height: int, width: int) -> float:
    """bpp of a file or payload of ``num_bytes`` for an H x W image."""
    return num_bytes * 8 / (height * width) if height * width else math.nan
