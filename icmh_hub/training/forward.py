"""The codec's forward pass during training, with the released code's quantisation.

The likelihoods see additive uniform noise, the decoder sees straight-through rounded latents
(``round(y - mu) + mu``, ``round(z - median) + median``). Unlike CompressAI's own forward, the
noise is not drawn from the global RNG: image ``i`` of step ``k`` gets noise from a generator
seeded by (seed, k, i) alone (``SampleNoise``), so a step is the same numbers whether the batch
runs in one process or is split over several, and whether the run was resumed or not.

Mirrored forwards: ScaleHyperprior (bmshj2018-hyperprior), MeanScaleHyperprior (mbt2018-mean and
the demo codec), TIC, and JointAutoregressiveHierarchicalPriors (mbt2018, cheng2020-*; the
context model sees the noisy latents, as in CompressAI). Any other model runs its own forward in
train() mode, with CompressAI's noise drawn from the global RNG under a per-step seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._compressai import compressai  # noqa: F401  (first, without its import warning)
from compressai.models.google import JointAutoregressiveHierarchicalPriors, MeanScaleHyperprior, ScaleHyperprior
from compressai.ops import quantize_ste

from ..codecs.tic_model import TIC
from ..errors import InvalidArgumentError
from .data import mix_seed

_SCALE, _MEAN_SCALE, _CONTEXT = ScaleHyperprior.forward, MeanScaleHyperprior.forward, JointAutoregressiveHierarchicalPriors.forward
MIRRORED = (_SCALE, _MEAN_SCALE, _CONTEXT, TIC.forward)
NOISE_Y, NOISE_Z = 1, 2  # noise streams


class SampleNoise:
    """Uniform noise in [-0.5, 0.5) for a batch, drawn image by image from (seed, step, index), float32."""

    def __init__(self, seed: int, step: int, indices: Sequence[int]) -> None:
        self.seed, self.step, self.indices = seed, step, list(indices)

    def like(self, tensor: torch.Tensor, stream: int) -> torch.Tensor:
        if tensor.shape[0] != len(self.indices):
            raise InvalidArgumentError(f"noise for {len(self.indices)} images asked for a batch of {tensor.shape[0]}")
        draws = [
            torch.rand(tensor.shape[1:], generator=torch.Generator().manual_seed(mix_seed(self.seed, self.step, i, stream)))
            for i in self.indices
        ]
        return (torch.stack(draws) - 0.5).to(tensor.device)  # float32 whatever the tensor's dtype


def supports_training_forward(model: nn.Module) -> bool:
    """Whether ``training_forward`` mirrors this model (else it falls back to its own forward)."""
    return type(model).forward in MIRRORED


def float32_region(tensor: torch.Tensor):
    """No autocast from here: the entropy model and the likelihoods stay float32 under --amp."""
    return torch.autocast(tensor.device.type, enabled=False)


def bottleneck_likelihoods(model: nn.Module, z_noisy: torch.Tensor) -> torch.Tensor:
    """The entropy bottleneck's likelihoods of already-noisy z (what its forward computes after
    adding its own noise: channels first, one row of values per channel)."""
    bottleneck = model.entropy_bottleneck
    channels_first = z_noisy.float().transpose(0, 1)
    likelihood, _, _ = bottleneck._likelihood(channels_first.reshape(z_noisy.shape[1], 1, -1))
    if bottleneck.use_likelihood_bound:
        likelihood = bottleneck.likelihood_lower_bound(likelihood)
    return likelihood.reshape(channels_first.shape).transpose(0, 1)


def gaussian_likelihoods(model: nn.Module, y_noisy: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
    conditional = model.gaussian_conditional
    means = None if means is None else means.float()
    likelihood = conditional._likelihood(y_noisy.float(), scales.float(), means)
    if conditional.use_likelihood_bound:
        likelihood = conditional.likelihood_lower_bound(likelihood)
    return likelihood


def straight_through(latent: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor:
    return quantize_ste(latent) if centre is None else quantize_ste(latent - centre) + centre


def training_forward(model: nn.Module, x: torch.Tensor, noise: SampleNoise) -> dict[str, Any]:
    """CompressAI-style output (x_hat, likelihoods) with the training quantisation above."""
    forward = type(model).forward
    if forward not in MIRRORED:
        return _own_forward(model, x, noise)
    y = model.g_a(x)
    z = model.h_a(torch.abs(y) if forward is _SCALE else y)
    with float32_region(z):
        z_likelihoods = bottleneck_likelihoods(model, z.float() + noise.like(z, NOISE_Z))
    medians = model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
    params = model.h_s(straight_through(z, medians))
    y_noisy = y.float() + noise.like(y, NOISE_Y)
    if forward is _SCALE:
        scales, means = params, None
    elif forward is _CONTEXT:
        context = model.context_prediction(y_noisy)
        scales, means = model.entropy_parameters(torch.cat((params, context), dim=1)).chunk(2, 1)
    else:
        scales, means = params.chunk(2, 1)
    with float32_region(y):
        y_likelihoods = gaussian_likelihoods(model, y_noisy, scales, means)
    return {"x_hat": model.g_s(straight_through(y, means)), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


def _own_forward(model: nn.Module, x: torch.Tensor, noise: SampleNoise) -> dict[str, Any]:
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(mix_seed(noise.seed, noise.step, *noise.indices[:1]))
            return model(x)
    finally:
        model.train(was_training)
