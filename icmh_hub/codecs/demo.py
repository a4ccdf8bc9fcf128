"""The demo zoo's codec: a narrow mean-scale hyperprior that trains on a CPU.

Its weights are not the builder's: they ship in the package (``adapters/demo``, trained by
``python -m benchmarks.proxy``) and the built-in index names them under ``base_codecs``, so
``icmh_hub.assemble`` loads them like any other indexed base weights (and a user index can
replace them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.spec import CodecSpec, register_codec
from ..errors import CheckpointError
from .zoo import GDN_POINTS

if TYPE_CHECKING:
    from torch import nn

DEMO_CODEC = "mbt2018-mean-demo"
DEMO_N, DEMO_M = 32, 96


def _build(quality: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise CheckpointError(
            f"{DEMO_CODEC} has no weights of its own: the index's base_codecs names them (the built-in "
            f"demo.json does); build it with icmh_hub.build_base({DEMO_CODEC!r}, q)"
        )
    from .._compressai import compressai

    return compressai.models.MeanScaleHyperprior(N=DEMO_N, M=DEMO_M)


register_codec(
    CodecSpec(
        DEMO_CODEC,
        _build,
        {q: DEMO_N for q in range(1, 5)},
        *GDN_POINTS,
        description=f"mbt2018-mean with N={DEMO_N}, M={DEMO_M}, trained on the proxy data set (demo zoo, offline)",
        latent_coding="mean-scale",
        latent_channels={q: DEMO_M for q in range(1, 5)},
        memory_per_megapixel=650,  # benchmarks.memory, rounded up to 50
    )
)
