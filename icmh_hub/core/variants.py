"""SFMA's variants (the paper's ablations) and the configs of the built-in adapter methods:
plain data, so that the CLI can offer them as choices without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..errors import InvalidArgumentError
from .methods import DEFAULT_METHOD, MethodConfig

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
MAX_MIDDLE_DIM = 4096
# scalable coding (core/scalable.py): a mask generator plus decoder adapters of this variant (None: none)
DECODER_ADAPTERS: dict[str, str | None] = {"scalable-sfma": "sfma", "scalable-mask": None}


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """SFMA and its ablations: the bottleneck width d and the initialisation (``INITS``)."""

    method: str = DEFAULT_METHOD
    middle_dim: int = 64
    init: str = "identity"
    limits: ClassVar[Mapping[str, tuple[int, int]]] = {"middle_dim": (1, MAX_MIDDLE_DIM)}

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise InvalidArgumentError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


@dataclass(frozen=True)
class ScalableConfig(AdapterConfig):
    """A scalable method's options: the decoder adapters' width and init, the mask generator's width."""

    method: str = "scalable-sfma"
    mask_hidden: int = 64
    limits: ClassVar[Mapping[str, tuple[int, int]]] = {"middle_dim": (1, MAX_MIDDLE_DIM), "mask_hidden": (1, MAX_MIDDLE_DIM)}
