"""Scalable coding for machines and humans (paper Sec. 4.6 and App. F): one bitstream whose prefix
serves the machine task and whose whole serves people.

The encoder g_a and the entropy model stay the base codec's, so the full latent y_hat is the base
codec's. A mask generator (ICMH-Net's spatial-channel mask) maps the entropy parameters that
h_s(z_hat) predicts to a binary mask over y_hat's (C, H, W):

- base layer: z, and y_hat where the mask is set; the machine picture is g_s (with the decoder
  SFMAs of ``scalable-sfma``, or plain for the ``scalable-mask`` ablation) of y_hat with every
  position the base layer does not carry set to its predicted mean (0 for scale-only codecs);
- enhancement layer: y_hat where the mask is clear; base + enhancement is the whole y_hat, and g_s
  of it without adapters is the human picture, bit for bit the base codec's.

No mask is sent: the decoder has z_hat and recomputes it. It must come out the same on both
sides, so it is computed from integers only: the scale indexes (``build_indexes``, the numbers that
select the entropy coder's tables, which both sides must agree on anyway) and the means rounded to
integers, through the mask network evaluated in exact fixed-point integer arithmetic
(``MaskGenerator.decide``). Float summation order (threads, BLAS, hardware) cannot flip a decision.
Training uses the same network in floating point on the same integer features, with a hard
Gumbel-softmax (temperature 1) and a straight-through gradient (``MaskGenerator.sample``).

Only codecs whose latents are coded independently given z_hat can be split this way (the spec's
``latent_coding`` is "mean-scale" or "scale"); autoregressive ones cannot (nor could ICMH-Net).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import BitstreamError, InvalidArgumentError
from .adapter_set import STAGES, AdapterSet, stage_points
from .masking import MaskGenerator
from .methods import MethodConfig
from .spec import CodecSpec, check_scalable, get_codec
from .variants import DECODER_ADAPTERS, ScalableConfig


LAYERS = ("base", "full")
# CompressAI's rANS encoder writes its final state (two 32-bit words) into a buffer of one word per
# symbol, so a string of one or two symbols overruns the heap ("double free or corruption"); a
# layer of fewer elements than this is coded with zero symbols (index 0, mean 0) appended, which
# the decoder decodes and drops. Eight leaves room for the words the symbols themselves emit.
MIN_SYMBOLS = 8


class ScalableAdapters(AdapterSet):
    """A scalable task's adapters: the mask generator, plus decoder adapters (``scalable-sfma``;
    none for ``scalable-mask``). They attach, switch and detach like any AdapterSet; an
    AdaptedCodec whose active task holds one codes in two layers."""

    config_class = ScalableConfig
    layered = True
    separate_file = True

    @classmethod
    def allowed_points(cls, spec: CodecSpec, quality: int, config: MethodConfig) -> dict[str, str]:
        check_scalable(spec)
        return stage_points(spec, STAGES, ("decoder",)) if DECODER_ADAPTERS.get(config.method) else {}

    @classmethod
    def default_points(cls, spec: CodecSpec, quality: int, config: MethodConfig, stages: Iterable[int] = STAGES,
                       sides: Iterable[str] | None = None) -> dict[str, str]:
        check_scalable(spec)
        if sides is not None and set(sides) != {"decoder"}:
            raise InvalidArgumentError(f"{config.method} puts adapters in the decoder only: g_a stays the base codec's")
        return cls.allowed_points(spec, quality, config) and stage_points(spec, stages, ("decoder",))

    def build_modules(self, spec: CodecSpec) -> None:
        check_scalable(spec)
        if self.method not in DECODER_ADAPTERS:
            raise InvalidArgumentError(f"{self.method!r} is not a scalable method ({', '.join(DECODER_ADAPTERS)})")
        self.latent_channels = spec.latent_channels[self.quality]
        super().build_modules(spec)
        self.mask_generator = MaskGenerator(self.latent_channels, spec.latent_coding == "mean-scale", self.config.mask_hidden)

    @property
    def adapter_variant(self) -> str:
        return DECODER_ADAPTERS[self.method] or "sfma"  # scalable-mask holds none (no points)

    def layout(self) -> dict[str, Any]:
        return super().layout() | {"latent_channels": self.latent_channels}

    def mask(self, indexes: Any, means: Any) -> Any:
        """The coding mask (bool, the shape of y) for these scale indexes and means."""
        return self.mask_generator.decide(self.mask_generator.features(indexes, means))

    def codec_forward(self, codec: Any, x: torch.Tensor) -> dict[str, Any]:
        return forward_layers(codec.base, self, x)

    def codec_compress(self, codec: Any, x: torch.Tensor) -> dict[str, Any]:
        return compress_layers(codec.base, self, x)

    def codec_decompress(self, codec: Any, strings: Any, shape: Any, layer: str = "base", **kwargs: Any) -> dict[str, Any]:
        """The machine picture from the base layer, or with ``layer="full"`` the human one from both
        (the decoder adapters off)."""
        with codec.using(None if layer == "full" else codec.task):
            return decompress_layers(codec.base, self, strings, shape, layer)


# -- the codec's parts, for the hyperprior families that can be split -------------------------
def hyper_input(y: torch.Tensor, spec: CodecSpec) -> torch.Tensor:
    return torch.abs(y) if spec.latent_coding == "scale" else y


def entropy_parameters(model: nn.Module, z_hat: torch.Tensor, spec: CodecSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scales, means) that the hyper-synthesis predicts from z_hat (means None for scale-only
    codecs): the spec's own ``entropy_parameters`` function if it names one, else CompressAI's
    ``h_s``."""
    if spec.entropy_parameters:
        module, _, function = spec.entropy_parameters.partition(":")
        return getattr(importlib.import_module(module), function)(model, z_hat)
    params = model.h_s(z_hat)
    if spec.latent_coding == "scale":
        return params, None
    scales, means = params.chunk(2, 1)
    return scales, means


def _side_information(model: nn.Module, z_hat: torch.Tensor, spec: CodecSpec, adapters: ScalableAdapters):
    scales, means = entropy_parameters(model, z_hat, spec)
    indexes = model.gaussian_conditional.build_indexes(scales)
    return indexes, means, adapters.mask(indexes, means)


def _selected(values: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    """``values`` where ``keep`` is set, as a (1, n) row padded with zeros to MIN_SYMBOLS."""
    if values is None:
        return None
    chosen = values[keep]
    short = MIN_SYMBOLS - len(chosen)
    return torch.cat([chosen, chosen.new_zeros(short)])[None] if short > 0 else chosen[None]


def _code_part(conditional: nn.Module, y: torch.Tensor, indexes: torch.Tensor, means: torch.Tensor | None,
               keep: torch.Tensor) -> bytes:
    """The entropy-coded string of the elements of one image's y where ``keep`` is set (b"" for
    none: CompressAI's coder cannot code an empty list)."""
    if not keep.any():
        return b""
    return conditional.compress(_selected(y, keep), _selected(indexes, keep).int(), means=_selected(means, keep))[0]


def _decode_part(conditional: nn.Module, string: bytes, indexes: torch.Tensor, means: torch.Tensor | None,
                 keep: torch.Tensor, out: torch.Tensor) -> None:
    count = int(keep.sum())
    if count == 0:
        if string:
            raise BitstreamError("damaged .icmh file: a layer holds bytes for no latent element")
        return
    decoded = conditional.decompress([string], _selected(indexes, keep).int(), means=_selected(means, keep))[0]
    out[keep] = decoded[:count].to(out.dtype)


@torch.no_grad()
def compress_layers(model: nn.Module, adapters: ScalableAdapters, x: torch.Tensor) -> dict[str, Any]:
    """Code (B, 3, H, W) images (H, W multiples of the codec's pad multiple) in two layers:
    ``strings`` = [base-layer y strings, enhancement y strings, z strings], one per image each."""
    spec = get_codec(adapters.codec)
    y = model.g_a(x)
    z = model.h_a(hyper_input(y, spec))
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
    indexes, means, mask = _side_information(model, z_hat, spec, adapters)
    conditional = model.gaussian_conditional
    base, enhancement = [], []
    for i in range(len(y)):
        m = None if means is None else means[i]
        base.append(_code_part(conditional, y[i], indexes[i], m, mask[i]))
        enhancement.append(_code_part(conditional, y[i], indexes[i], m, ~mask[i]))
    return {"strings": [base, enhancement, z_strings], "shape": z.shape[-2:]}


@torch.no_grad()
def decompress_layers(model: nn.Module, adapters: ScalableAdapters, strings: list, shape: Any, layer: str = "base") -> dict[str, Any]:
    """The picture of ``layer``: "base" (y_hat outside the mask at its predicted means; the
    machine picture when the decoder SFMAs are active) or "full" (all of y_hat: the human picture
    when no adapter is active). ``strings`` as ``compress_layers`` gives them; for "base" the
    enhancement strings may be None."""
    if layer not in LAYERS:
        raise InvalidArgumentError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    spec = get_codec(adapters.codec)
    base, enhancement, z_strings = strings
    z_hat = model.entropy_bottleneck.decompress(z_strings, shape)
    indexes, means, mask = _side_information(model, z_hat, spec, adapters)
    y_hat = torch.zeros(indexes.shape, dtype=z_hat.dtype, device=z_hat.device) if means is None else means.clone()
    conditional = model.gaussian_conditional
    for i in range(len(y_hat)):
        m = None if means is None else means[i]
        _decode_part(conditional, base[i], indexes[i], m, mask[i], y_hat[i])
        if layer == "full":
            _decode_part(conditional, enhancement[i], indexes[i], m, ~mask[i], y_hat[i])
    return {"x_hat": model.g_s(y_hat).clamp_(0, 1), "mask": mask}


def forward_layers(model: nn.Module, adapters: ScalableAdapters, x: torch.Tensor) -> dict[str, Any]:
    """The eval-mode forward of the base layer: the machine picture from the rounded latents, and
    the likelihoods of what the base layer codes (1 where y is not sent: zero bits)."""
    spec = get_codec(adapters.codec)
    y = model.g_a(x)
    z = model.h_a(hyper_input(y, spec))
    z_hat, z_likelihoods = model.entropy_bottleneck(z, training=False)
    scales, means = entropy_parameters(model, z_hat, spec)
    y_hat, y_likelihoods = model.gaussian_conditional(y, scales, means=means, training=False)
    mask = adapters.mask(model.gaussian_conditional.build_indexes(scales), means)
    unsent = torch.zeros_like(y_hat) if means is None else means
    x_hat = model.g_s(torch.where(mask, y_hat, unsent))
    ones = torch.ones_like(y_likelihoods)
    return {"x_hat": x_hat, "likelihoods": {"y": torch.where(mask, y_likelihoods, ones), "z": z_likelihoods}, "mask": mask}
