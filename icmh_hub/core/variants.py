"""Adapter variants by name (the paper's ablations) and initialisations: plain data, so that the
CLI can offer them as choices without importing torch."""

from __future__ import annotations

VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {
    # variant name -> sequence of stages; each stage is the tuple of parallel branches in it
    "sfma": (("spatial", "frequency"),),
    "sma": (("spatial",),),
    "fma": (("frequency",),),
    "sma->fma": (("spatial",), ("frequency",)),
    "fma->sma": (("frequency",), ("spatial",)),
    "sma+sma": (("spatial", "spatial"),),
    "naive": (("bottleneck",),),
}
INITS = ("identity", "reference")
# scalable coding (core/scalable.py): a mask generator plus decoder adapters of this variant (None: none)
SCALABLE_VARIANTS: dict[str, str | None] = {"scalable-sfma": "sfma", "scalable-mask": None}
ALL_VARIANTS = tuple(VARIANTS) + tuple(SCALABLE_VARIANTS)
