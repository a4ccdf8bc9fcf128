"""Codec specs: everything icmh-hub needs to know about one base codec family, declared once.

A spec names the builder, the quality levels, the channel width N at each level, and the module
paths after which adapters go (``encoder_points[k-1]`` / ``decoder_points[k-1]`` is stage k, at
1/2**k of the image size on both sides). Adding a codec is one ``register_codec(CodecSpec(...))``;
the built-in families register in ``icmh_hub.codecs``, which ``import icmh_hub`` loads.

A builder is ``(quality, pretrained) -> model``, or the name of one as ``"module:function"`` so
that declaring a codec imports neither torch nor CompressAI (``icmh-hub list`` stays instant).
``pretrained=True`` asks the builder for weights of its own (CompressAI's zoo); weights named
by a registry index (``base_codecs``) are loaded by ``icmh_hub.assemble`` instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, unknown_name

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[[int, bool], "nn.Module"]
SIDES = ("encoder", "decoder")
# How the latent y is coded given the hyper-latent z: "mean-scale" and "scale" code every y
# element independently given z_hat (scalable coding can split them); "context" codes them in
# an autoregressive order (mbt2018, cheng2020) or in groups (ELIC).
LATENT_CODING = ("mean-scale", "scale", "context")
SCALABLE_CODINGS = ("mean-scale", "scale")


@dataclass(frozen=True)
class CodecSpec:
    """One base codec family.

    ``channels`` maps quality -> N, the width of the features at every insertion point.
    ``pad_multiple``: the input size must be a multiple of it (64 for the 4-stride hyperprior
    codecs); the coding layer pads (``icmh_hub.core.padding``) and crops back.
    ``latent_channels`` maps quality -> M, the channels of y (needed by scalable coding).
    ``latent_strides``: the strides of the latent grids ``compress()`` codes (y, z), checked in
    every file read. ``memory_per_megapixel``: peak MB per megapixel of compress or decompress
    (task adapters on, the family's widest quality), measured by ``benchmarks.memory``; the
    default pixel limit follows from it. ``entropy_parameters``: ``"module:function"`` mapping
    ``(model, z_hat)`` to (scales, means or None), for codecs whose hyper-synthesis is not
    CompressAI's ``h_s`` (scalable coding calls it).
    """

    name: str
    builder: Builder | str = field(repr=False)
    channels: Mapping[int, int]
    encoder_points: tuple[str, str, str]
    decoder_points: tuple[str, str, str]
    pad_multiple: int = 64
    description: str = ""
    latent_coding: str = "context"
    latent_channels: Mapping[int, int] | None = None
    latent_strides: tuple[int, ...] = (16, 64)
    memory_per_megapixel: int = 1100
    entropy_parameters: str = ""

    def __post_init__(self) -> None:
        if self.latent_coding not in LATENT_CODING:
            raise unknown_name("latent coding", self.latent_coding, LATENT_CODING)

    @property
    def qualities(self) -> tuple[int, ...]:
        return tuple(sorted(self.channels))

    def check_quality(self, quality: int) -> int:
        if isinstance(quality, bool) or quality not in self.channels:
            raise unknown_name(f"quality for {self.name}", quality, self.qualities)
        return quality

    def build(self, quality: int, pretrained: bool = False) -> nn.Module:
        """The base codec at ``quality``, in eval mode (the builder's own weights, or random ones)."""
        model = self._builder()(self.check_quality(quality), pretrained)
        return model.eval()

    def _builder(self) -> Builder:
        if callable(self.builder):
            return self.builder
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)

    def points(self, side: str) -> tuple[str, str, str]:
        if side == "encoder":
            return self.encoder_points
        if side == "decoder":
            return self.decoder_points
        raise unknown_name("side", side, SIDES)


_CODECS: dict[str, CodecSpec] = {}


def register_codec(spec: CodecSpec, replace: bool = False) -> CodecSpec:
    """Declare a codec family; ``replace=True`` to overwrite an existing name on purpose."""
    if spec.name in _CODECS and not replace:
        raise InvalidArgumentError(f"codec {spec.name!r} is already registered; pass replace=True to override it")
    _CODECS[spec.name] = spec
    return spec


def get_codec(name: str) -> CodecSpec:
    """The spec called ``name``; an unknown name lists the closest ones."""
    try:
        return _CODECS[name]
    except (KeyError, TypeError):
        raise unknown_name("codec", name, sorted(_CODECS)) from None


def list_codecs() -> list[str]:
    return sorted(_CODECS)


def check_scalable(spec: CodecSpec) -> CodecSpec:
    """Refuse, in one line, a codec whose latents cannot be split into a machine and a human layer."""
    if spec.latent_coding not in SCALABLE_CODINGS:
        able = [name for name in list_codecs() if _CODECS[name].latent_coding in SCALABLE_CODINGS]
        raise InvalidArgumentError(
            f"{spec.name} codes its latents with a context model (each element depends on decoded neighbours), so "
            f"they cannot be split into a machine and a human layer; scalable variants need one of: {', '.join(able)}"
        )
    if not spec.latent_channels:
        raise InvalidArgumentError(f"{spec.name} declares no latent_channels (M per quality); scalable variants need them")
    return spec


def describe(spec: CodecSpec) -> dict[str, Any]:
    """A JSON-ready summary of a spec (``icmh-hub codecs``)."""
    return {"codec": spec.name, "qualities": list(spec.qualities), "N": sorted(set(spec.channels.values())),
            "latent_coding": spec.latent_coding, "about": spec.description}
