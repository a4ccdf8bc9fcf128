"""TransTIC's options, plain data (the CLI reads them without torch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..core.methods import MethodConfig

TRANSTIC_CODECS = ("tic",)


@dataclass(frozen=True)
class TransticConfig(MethodConfig):
    """``tokens``: prompt tokens per window (the released weights: 16). The reference's other
    settings are fixed here: deep prompts, prepended, in the encoder's first two Swin stages and in
    every decoder stage, the encoder's at half the resolution of the image tokens."""

    method: str = "transtic"
    tokens: int = 16
    limits: ClassVar[Mapping[str, tuple[int, int]]] = {"tokens": (1, 256)}
