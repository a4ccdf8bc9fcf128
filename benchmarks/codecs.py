"""Benchmark codecs and images: CompressAI codecs with random weights, made to code like real ones.

No pretrained weights can be assumed (the benchmarks run offline), so the base codec is built with
random weights from a fixed seed. A freshly initialised codec maps every image to almost all-zero
latents, which would make entropy coding unrealistically cheap and flatter the base codec; so the
last strided convolution of g_a is scaled until the latents span many quantisation bins, and the
benchmarks report the bits per pixel that result, so that a reader can judge how realistic the
entropy-coding share was. The adapters get PyTorch's default init (``init="reference"``), so
they really change the features (an identity-initialised adapter costs the same arithmetic).
"""

from __future__ import annotations

import torch

from icmh_hub import attach, build_adapters, get_codec
from icmh_hub.core.attach import AdaptedCodec

LATENT_GAIN = 5.0
TASK = "bench"


def spread_latents(model: torch.nn.Module, gain: float = LATENT_GAIN) -> None:
    """Scale g_a's last strided convolution so that random-weight latents span many bins."""
    strided = [m for name, m in model.named_modules()  # g_a.* in CompressAI, g_a0..g_a7 in TIC
               if name.startswith("g_a") and isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    with torch.no_grad():
        strided[-1].weight.mul_(gain)
        strided[-1].bias.mul_(gain)


def adapted_codec(codec: str, quality: int, variant: str = "sfma", seed: int = 0) -> AdaptedCodec:
    """``codec`` at ``quality`` (random weights, realistic latents) with one task's adapters, active."""
    torch.manual_seed(seed)
    base = get_codec(codec).build(quality, pretrained=False)
    spread_latents(base)
    adapters = build_adapters(codec, quality, variant=variant, init="reference", task=TASK)
    adapted = attach(base, codec, {TASK: adapters}, quality=quality)
    adapted.update(force=True)
    return adapted.eval()


def test_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random image with fine noise, in [0, 1], shape (1, 3, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, height // 16), max(1, width // 16), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (image + 0.1 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def parse_size(text: str) -> tuple[int, int]:
    """'768x512' (width x height, as image sizes are written) -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size takes WIDTHxHEIGHT such as 768x512, got {text!r}") from None
    return height, width
