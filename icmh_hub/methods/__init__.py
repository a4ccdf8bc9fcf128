"""The built-in adapter methods (``icmh_hub.core.methods``): SFMA and its ablations, the two
scalable methods, and TransTIC's prompts. Registering imports no torch: each method names its
adapter class as "module:Class", imported when adapters of that method are built."""

from __future__ import annotations

from ..core.methods import register_method
from ..core.variants import DECODER_ADAPTERS, VARIANTS, AdapterConfig, ScalableConfig
from .transtic_config import TRANSTIC_CODECS, TransticConfig

_SFMA_FAMILY = {
    "sfma": "SFMA (Adapt-ICMH, ECCV 2024): spatial and frequency modulation in parallel after each stage",
    "sma": "ablation: the spatial branch alone",
    "fma": "ablation: the frequency branch alone",
    "sma->fma": "ablation: spatial then frequency, in sequence",
    "fma->sma": "ablation: frequency then spatial, in sequence",
    "sma+sma": "ablation: two spatial branches in parallel",
    "naive": "ablation: a bottleneck adapter (1x1 down, ReLU, 1x1 up, residual)",
}
assert set(_SFMA_FAMILY) == set(VARIANTS)
for _name, _about in _SFMA_FAMILY.items():
    register_method(_name, AdapterConfig, "icmh_hub.core.adapter_set:AdapterSet", _about)

for _name, _decoder in DECODER_ADAPTERS.items():
    _adapters = f"{_decoder} adapters in g_s" if _decoder else "no adapters"
    register_method(_name, ScalableConfig, "icmh_hub.core.scalable:ScalableAdapters",
                    f"two layers: a mask generator + {_adapters} (hyperprior codecs without a context model)")

register_method("transtic", TransticConfig, "icmh_hub.methods.transtic:TransticAdapters",
                "TransTIC (ICCV 2023): instance prompts in g_a's first two Swin stages, task prompts in g_s", codecs=TRANSTIC_CODECS)
