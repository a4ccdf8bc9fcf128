"""Helpers for the tests against the reference TIC / TIC-SFMA vectors (../shared/reference).

Knife-edge latents: the reference vectors round ``y - mu`` with float32 numbers computed on
another machine. A latent that lies within a few float32 steps of a rounding boundary (x.5) can
round either way depending on the summation order of any convolution or FFT (we measured one at
``0.5000003`` whose side changes with the number of threads alone). ``reconstruct_like_reference``
therefore decodes our latents as they are and, only when that misses, tries the other rounding
of the (at most ``MAX_TIES``) latents within ``TIE`` of a boundary. Any real mistake (a wrong
weight, a wrong insertion point) changes far more than that and still fails.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch

REFERENCE = Path(os.environ.get("ICMH_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"))
CHECKPOINT = REFERENCE / "tic_sfma_layout_random.pth.tar"
VECTORS = REFERENCE / "tic_sfma_layout_vectors.safetensors"
TSV = REFERENCE / "tic_sfma_state_dict.tsv"
TOLERANCE = 1e-4
TIE = 1e-5  # |frac(y - mu) - 0.5| below this is a knife edge (float32 steps near 5 are ~5e-7)
MAX_TIES = 2

TRANSTIC_CHECKPOINT = REFERENCE / "transtic_layout_random.pth.tar"
TRANSTIC_VECTORS = REFERENCE / "transtic_layout_vectors.safetensors"
TRANSTIC_TSV = REFERENCE / "transtic_state_dict.tsv"

needs_reference = pytest.mark.skipif(not VECTORS.is_file(), reason=f"reference vectors not found in {REFERENCE}")
needs_transtic = pytest.mark.skipif(
    not (TRANSTIC_VECTORS.is_file() and TRANSTIC_CHECKPOINT.is_file()), reason=f"TransTIC reference files not found in {REFERENCE}"
)


def _latents(tic, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y - mu`` and ``mu`` as the codec's forward computes them (hooks, if any, active)."""
    y = tic.g_a(x)
    z = tic.h_a(y)
    medians = tic.entropy_bottleneck._get_medians()
    assert ((z - medians).frac().abs() - 0.5).abs().min() > TIE, "a z latent is on a knife edge"
    _, means = tic.h_s(torch.round(z - medians) + medians).chunk(2, 1)
    return y - means, means


def reconstruct_like_reference(tic, x: torch.Tensor, expected: torch.Tensor) -> tuple[float, int, int]:
    """Max |x_hat - expected|, the number of knife-edge latents, and how many had to be flipped."""
    with torch.no_grad():
        residual, means = _latents(tic, x)
        distance = (residual.frac().abs() - 0.5).abs()
        ties = (distance < TIE).nonzero().tolist()
        assert len(ties) <= MAX_TIES, f"{len(ties)} latents within {TIE} of a rounding boundary"
        rounded = torch.round(residual)
        best = (float("inf"), len(ties), 0)
        for flips in itertools.product((False, True), repeat=len(ties)):  # ours first
            candidate = rounded.clone()
            for flip, index in zip(flips, ties):
                if flip:
                    value = residual[tuple(index)]
                    other = torch.floor(value) if candidate[tuple(index)] > value else torch.ceil(value)
                    candidate[tuple(index)] = other
            error = (tic.g_s(candidate + means) - expected).abs().max().item()
            best = min(best, (error, len(ties), sum(flips)))
            if error <= TOLERANCE:
                break
    return best
