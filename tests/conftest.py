"""Shared fixtures: small random codecs and images the tests make themselves (no downloads)."""

from __future__ import annotations

import copy

import pytest
import torch

import icmh_hub._compressai  # noqa: F401  CompressAI imported once, as icmh-hub imports it (no jit warning)


def pytest_configure(config):
    """One intra-op thread for the whole suite: the test machines have 2 shared cores, and the
    tests' small tensors gain nothing from a second thread but pay for its synchronisation
    (measured: about 10% less wall time on the attach/TIC/SFMA tests; the whole suite, whose
    heaviest files already ran on one thread, is unchanged within noise). Child processes get the
    same count through OMP_NUM_THREADS, so results compared across processes are bit-identical."""
    import os

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


def make_image(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth-ish random image in [0, 1], shape (1, 3, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, height // 8), max(1, width // 8), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (image + 0.05 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def build_pair(codec: str, quality: int):
    """A random base codec with entropy tables ready, and an untouched deep copy of it."""
    from icmh_hub import get_codec

    torch.manual_seed(1)
    model = get_codec(codec).build(quality, pretrained=False)
    spread_latents(model)
    model.update(force=True)
    return model, copy.deepcopy(model)


def spread_latents(model: torch.nn.Module, gain: float = 20.0) -> None:
    """Scale the last strided convolution of g_a so that a random codec's latents span many
    quantisation bins (freshly initialised codecs map every image to nearly all zeros)."""
    strided = [m for m in model.g_a.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    last_conv = strided[-1]
    with torch.no_grad():
        last_conv.weight.mul_(gain)
        last_conv.bias.mul_(gain)


def coded(model, image: torch.Tensor):
    """compress() strings and decompress() pixels of ``image`` under ``model``."""
    with torch.no_grad():
        out = model.compress(image)
        x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
    return out["strings"], x_hat


def hooks_left(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
