"""The training forward of scalable coding (``scalable-sfma`` / ``scalable-mask``).

Loss ``R(base layer) + lambda * D_task(machine picture)``: the rate counts z and the elements of y
the mask keeps; the machine picture is g_s (with the decoder SFMAs, hooked in by the AdaptedCodec)
of y with the dropped elements at their predicted means. Only the mask generator and the decoder
SFMAs train. Quantisation as in ``training.forward`` (noise for the likelihoods, straight-through
rounding for the decoder, per-image noise from (seed, step, image)); the mask is a hard
Gumbel-softmax sample (temperature 1, straight-through), its Gumbel noise drawn the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.scalable import ScalableAdapters
from ..core.scalable import entropy_parameters, hyper_input
from ..core.spec import get_codec
from .forward import (
    NOISE_Y, NOISE_Z, SampleNoise, bottleneck_likelihoods, float32_region, gaussian_likelihoods, straight_through,
)

NOISE_GUMBEL = (3, 4)  # two uniform draws per element of the mask


def scalable_training_forward(model: nn.Module, adapters: ScalableAdapters, x: torch.Tensor, noise: SampleNoise) -> dict[str, Any]:
    """CompressAI-style output: the machine picture, and likelihoods whose bits are the base
    layer's (y's likelihoods raised to the mask: 1, zero bits, where an element is not sent)."""
    spec = get_codec(adapters.codec)
    y = model.g_a(x)
    z = model.h_a(hyper_input(y, spec))
    with float32_region(z):
        z_likelihoods = bottleneck_likelihoods(model, z.float() + noise.like(z, NOISE_Z))
    medians = model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
    scales, means = entropy_parameters(model, straight_through(z, medians), spec)
    with float32_region(y):
        y_likelihoods = gaussian_likelihoods(model, y.float() + noise.like(y, NOISE_Y), scales, means)
    generator = adapters.mask_generator
    features = generator.features(model.gaussian_conditional.build_indexes(scales), means)
    uniform = torch.stack([noise.like(y, stream) + 0.5 for stream in NOISE_GUMBEL])
    mask = generator.sample(features, uniform)
    unsent = torch.zeros_like(y) if means is None else means
    y_tilde = mask * straight_through(y, means) + (1 - mask) * unsent
    return {"x_hat": model.g_s(y_tilde), "likelihoods": {"y": y_likelihoods.pow(mask.float()), "z": z_likelihoods}, "mask": mask}
