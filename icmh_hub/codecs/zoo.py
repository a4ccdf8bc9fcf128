"""CompressAI's zoo codecs (and ELIC, which CompressAI defines but ships no weights for).

Insertion points, as in the paper: the outputs of the three g_a stages at 1/2, 1/4 and
1/8 of the image size, and of the g_s stages that produce 1/8, 1/4 and 1/2. The N tables are
CompressAI's (``compressai.zoo.image.cfgs``; a test checks they still agree), written out here
so that listing codecs does not import CompressAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.spec import CodecSpec, register_codec
from ..errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn


def _n(low: int, high: int, switch: int, last: int) -> dict[int, int]:
    """quality -> N: ``low`` up to ``switch``, ``high`` from there to ``last``."""
    return {q: low if q <= switch else high for q in range(1, last + 1)}


LATENT_CHANNELS = {  # quality -> M, for the codecs scalable coding can split
    "bmshj2018-hyperprior": _n(192, 320, 5, 8),
    "mbt2018-mean": _n(192, 320, 4, 8),
}
CHANNELS = {
    "bmshj2018-hyperprior": _n(128, 192, 5, 8),
    "mbt2018-mean": _n(128, 192, 4, 8),
    "mbt2018": _n(192, 192, 8, 8),
    "cheng2020-anchor": _n(128, 192, 3, 6),
    "cheng2020-attn": _n(128, 192, 3, 6),
}


def _zoo_builder(architecture: str):
    """Build through CompressAI's zoo: its URLs, its cache, its state-dict conversion."""

    def build(quality: int, pretrained: bool) -> nn.Module:
        from .._compressai import compressai

        return compressai.zoo.image_models[architecture](quality=quality, metric="mse", pretrained=pretrained)

    return build


def _elic_builder(quality: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise CheckpointError(
            "CompressAI ships no pretrained weights for Elic2022Official; name yours in an index's "
            "base_codecs (adapters/README.md) and build it with icmh_hub.build_base('elic2022', q)"
        )
    from .._compressai import compressai

    return compressai.models.Elic2022Official(N=192, M=320)


GDN_POINTS = (("g_a.1", "g_a.3", "g_a.5"), ("g_s.5", "g_s.3", "g_s.1"))
# Peak memory of compress or decompress (the larger, task adapters on, at the family's widest
# quality), MB per megapixel, measured by benchmarks.memory and rounded up to 50.
MB_PER_MEGAPIXEL = {"bmshj2018-hyperprior": 950, "mbt2018-mean": 950, "mbt2018": 1000, "cheng2020-anchor": 950,
                    "cheng2020-attn": 1100, "elic2022": 950}

for _arch, _about, _latents in (
    ("bmshj2018-hyperprior", "Balle et al. 2018, scale hyperprior", "scale"),
    ("mbt2018-mean", "Minnen et al. 2018, mean-scale hyperprior", "mean-scale"),
    ("mbt2018", "Minnen et al. 2018, joint autoregressive and hierarchical priors", "context"),
):
    register_codec(CodecSpec(_arch, _zoo_builder(_arch), CHANNELS[_arch], *GDN_POINTS, description=_about,
                             latent_coding=_latents, latent_channels=LATENT_CHANNELS.get(_arch),
                             memory_per_megapixel=MB_PER_MEGAPIXEL[_arch]))

register_codec(
    CodecSpec(
        "cheng2020-anchor",
        _zoo_builder("cheng2020-anchor"),
        CHANNELS["cheng2020-anchor"],
        encoder_points=("g_a.1", "g_a.3", "g_a.5"),  # after the residual block of each stride stage
        decoder_points=("g_s.6", "g_s.4", "g_s.2"),  # after the residual block behind each upsample
        description="Cheng et al. 2020, residual blocks, GMM entropy model with context",
        memory_per_megapixel=MB_PER_MEGAPIXEL["cheng2020-anchor"],
    )
)
register_codec(
    CodecSpec(
        "cheng2020-attn",
        _zoo_builder("cheng2020-attn"),
        CHANNELS["cheng2020-attn"],
        encoder_points=("g_a.1", "g_a.4", "g_a.6"),
        decoder_points=("g_s.8", "g_s.6", "g_s.3"),
        description="Cheng et al. 2020 with attention blocks",
        memory_per_megapixel=MB_PER_MEGAPIXEL["cheng2020-attn"],
    )
)
register_codec(
    CodecSpec(
        "elic2022",
        _elic_builder,
        {q: 192 for q in range(1, 9)},
        encoder_points=("g_a.3", "g_a.8", "g_a.12"),  # end of each stage before the next stride
        decoder_points=("g_s.13", "g_s.9", "g_s.4"),
        description="He et al. 2022 (CompressAI Elic2022Official, N=192, M=320; bring weights)",
        memory_per_megapixel=MB_PER_MEGAPIXEL["elic2022"],
    )
)
