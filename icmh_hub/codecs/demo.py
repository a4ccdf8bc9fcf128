"""The demo zoo's codecs: a narrow mean-scale hyperprior that trains on a CPU, in two trainings.

``mbt2018-mean-demo`` was trained on the synthetic proxy images (``python -m benchmarks.proxy``,
shipped in ``adapters/demo``), ``mbt2018-mean-photo`` on crops of real photographs
(``python -m benchmarks.real_photo_experiment --ship``, shipped in ``adapters/photo``). The same
architecture under two names, because an adapter file names the codec it was trained on and
each set of adapters only fits the base weights it was trained with.

Their weights are not the builder's: the built-in index names them under ``base_codecs``, so
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
PHOTO_CODEC = "mbt2018-mean-photo"
DEMO_N, DEMO_M = 32, 96


def _builder(name: str, index: str):
    def build(quality: int, pretrained: bool) -> nn.Module:
        if pretrained:
            raise CheckpointError(
                f"{name} has no weights of its own: the index's base_codecs names them (the built-in "
                f"{index} does); build it with icmh_hub.build_base({name!r}, q)"
            )
        from .._compressai import compressai

        return compressai.models.MeanScaleHyperprior(N=DEMO_N, M=DEMO_M)

    return build


for _name, _index, _data in ((DEMO_CODEC, "demo.json", "the proxy data set"), (PHOTO_CODEC, "photo.json", "crops of real photographs")):
    register_codec(
        CodecSpec(
            _name,
            _builder(_name, _index),
            {q: DEMO_N for q in range(1, 5)},
            *GDN_POINTS,
            description=f"mbt2018-mean with N={DEMO_N}, M={DEMO_M}, trained on {_data} (demo zoo, offline)",
            latent_coding="mean-scale",
            latent_channels={q: DEMO_M for q in range(1, 5)},
            memory_per_megapixel=650,  # benchmarks.memory, rounded up to 50
        )
    )
