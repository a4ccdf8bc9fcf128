"""TransTIC (Chen et al., "TransTIC: Transferring Transformer-based Image Compression from Human
Perception to Machine Perception", ICCV 2023) as an adapter method on our TIC.

Data flow, with P the method's modules (``TransticPrompts``) and the codec's own stages:

    x -> g_a0 -> g_a1* -> g_a2 -> g_a3* -> g_a4 -> ... -> y       (* prompted: keys and values of
         |        ^                 ^                                every window get prompt tokens
         +-> P.generator(x) -----> prompt maps                      made from the image)
    y_hat -> g_s0* -> g_s1 -> g_s2* -> g_s3 -> g_s4* -> g_s5 -> g_s6* -> g_s7 -> x_hat
             (* task prompts: the same tokens for every image, prepended in every window)

The hyperprior and the entropy models are the base codec's, untouched, so the base entropy
model decodes TransTIC's bitstreams. g_a0 gets an output hook that keeps the prompt generator's
map of the image for the prompted stages; the prompted stages get their forward replaced by
TransticPrompts' version, which runs the stage's own weights (nothing of the codec is copied
or changed). With another task or none active, every stage runs its own forward: the base TIC,
bit for bit.

One more difference, TransTIC's own: its TIC runs shifted windows with Swin's shift mask, while
Adapt-ICMH's (ours, for the human picture and SFMA) runs them without. The prompts were trained
on the masked computation, so while TransTIC is active every stage with shifted windows
(hyperprior included: encoder and decoder compute the same entropy parameters) runs masked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..codecs.tic_model import SwinBlock, set_shift_masks
from ..core.adapter_set import AdapterSet
from ..core.methods import MethodConfig
from ..core.spec import CodecSpec
from ..errors import AttachError
from .transtic_config import TransticConfig
from .transtic_model import TransticPrompts

GENERATOR_POINT = "g_a0"  # its input is the (padded) image the prompt generator reads
ENCODER_STAGES = ("g_a1", "g_a3")
DECODER_STAGES = ("g_s0", "g_s2", "g_s4", "g_s6")
MASKED_STAGES = ("g_a5", "g_a7", "h_a1", "h_s2")  # no prompts, but shifted windows (h_a3, h_s0 never shift)
POINTS = (GENERATOR_POINT, *ENCODER_STAGES, *MASKED_STAGES, *DECODER_STAGES)


@contextlib.contextmanager
def shift_masked(stage: nn.Module) -> Iterator[None]:
    """``stage``'s shifted windows run with Swin's shift mask inside the block (TransTIC's TIC)."""
    blocks = [m for m in stage.modules() if isinstance(m, SwinBlock)]
    before = [block.masked for block in blocks]
    set_shift_masks(stage, True)
    try:
        yield
    finally:
        for block, flag in zip(blocks, before):
            block.masked = flag


class TransticAdapters(AdapterSet):
    """One task's TransTIC prompts for TIC at one quality (``prompts``: every trainable tensor of
    the reference's prompt model, 1.62M values with 16 tokens)."""

    config_class = TransticConfig
    separate_file = True

    @classmethod
    def allowed_points(cls, spec: CodecSpec, quality: int, config: MethodConfig) -> dict[str, str]:
        return {path: path for path in POINTS}

    @classmethod
    def default_points(cls, spec: CodecSpec, quality: int, config: MethodConfig, stages: Iterable[int] = (),
                       sides: Iterable[str] | None = None) -> dict[str, str]:
        """Every point: the reference's prompts have no per-stage choice."""
        return cls.allowed_points(spec, quality, config)

    def build_modules(self, spec: CodecSpec) -> None:
        self.prompts = TransticPrompts(tokens=self.config.tokens)
        self._context: torch.Tensor | None = None

    def hook_kind(self, path: str) -> str:
        return "output" if path == GENERATOR_POINT else "forward"

    def adapt_output(self, path: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        """At g_a0: the prompt generator's map of the image, for g_a1 and g_a3 of the same pass."""
        self._context = self.prompts.encoder_context(inputs[0])
        return None

    def adapt_forward(self, path: str, module: nn.Module, forward: Callable[..., Any], x: torch.Tensor) -> torch.Tensor:
        with shift_masked(module):
            if path in MASKED_STAGES:
                return forward(x)
            if path in DECODER_STAGES:
                return self.prompts.decoder_stage(path, module, x)
            if self._context is None:
                raise AttachError(f"TransTIC's {path} ran before g_a0 gave it the image's prompts; run g_a as a whole")
            context = self._context
            if path == ENCODER_STAGES[-1]:
                self._context = None  # the pass is done with it
            return self.prompts.encoder_stage(path, module, x, context)


def adapters_from_reference(state: Mapping[str, torch.Tensor], q: int, **info: Any) -> TransticAdapters:
    """A TransticAdapters holding the prompts of a TransTIC state_dict (``module.`` removed)."""
    from ..core.adapter_set import build_adapters
    from .transtic_model import prompts_from_reference

    adapters = build_adapters("tic", q, method="transtic", **info)
    adapters.prompts.load_state_dict(prompts_from_reference(state))
    return adapters
