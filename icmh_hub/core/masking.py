"""The mask generator of scalable coding: which elements of y the machine (base) layer carries.

It is computed from integers only (the scale indexes that select the entropy coder's tables, and
the means rounded to integers) and, for coding, evaluated in exact fixed-point int64 arithmetic, so
that encoder and decoder get the same mask whatever the float summation order of their machines.
Training evaluates the same network in floating point on the same features, with a hard
Gumbel-softmax and a straight-through gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidArgumentError


class MaskGenerator(nn.Module):
    """Entropy parameters -> which elements of y go in the base layer (True) or the enhancement one.

    Features: the scale index of every element and, for mean-scale codecs, its mean rounded to an
    integer (clamped to +-``MEAN_CLAMP``); 1x1 -> 3x3 -> 1x1 convolutions with ReLUs (a 3x3
    neighbourhood of latent positions, all channels). The last bias starts at ``keep_logit``:
    an untrained generator keeps nearly everything in the base layer.
    """

    FEATURE_SCALE = 16  # features are divided by this (folded into the integer weights)
    MEAN_CLAMP = 1024
    FIXED_POINT = 16  # bits after the binary point of the integer evaluation

    def __init__(self, latent_channels: int, with_means: bool, hidden: int = 64, keep_logit: float = 3.0) -> None:
        super().__init__()
        if latent_channels < 1 or hidden < 1:
            raise InvalidArgumentError(f"latent_channels and hidden must be positive, got {latent_channels}, {hidden}")
        self.with_means = with_means
        inputs = latent_channels * (2 if with_means else 1)
        self.embed = nn.Conv2d(inputs, hidden, 1)
        self.context = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, latent_channels, 1)
        nn.init.constant_(self.out.bias, keep_logit)

    def features(self, indexes: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
        """The integer features (int64): scale indexes, then rounded means."""
        parts = [indexes.long()]
        if self.with_means:
            if means is None:
                raise InvalidArgumentError("this mask generator needs the means of a mean-scale codec")
            parts.append(torch.round(means.detach()).clamp(-self.MEAN_CLAMP, self.MEAN_CLAMP).long())
        return torch.cat(parts, dim=1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Float logits (the training path); ``features`` as ``features()`` gives them."""
        h = F.relu(self.embed(features.to(self.out.weight.dtype) / self.FEATURE_SCALE))
        return self.out(F.relu(self.context(h)))

    def sample(self, features: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """A hard {0, 1} mask with a straight-through gradient: the hard Gumbel-softmax at
        temperature 1 over (keep, drop) logits (logit, 0). ``uniform``: two U(0, 1) draws per
        element, shape (2, *logits.shape)."""
        logits = self.logits(features)
        eps = torch.finfo(logits.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(eps, 1 - 1e-7)))
        soft = torch.sigmoid(logits + gumbel[0] - gumbel[1])
        return (soft > 0.5).to(soft.dtype) + (soft - soft.detach())  # exactly 0 or 1, gradient of soft

    @torch.no_grad()
    def decide(self, features: torch.Tensor) -> torch.Tensor:
        """The inference mask, computed in exact int64 fixed-point arithmetic on the CPU (the
        same bits on every machine), as a bool tensor on ``features``' device."""
        one = 1 << self.FIXED_POINT
        x = features.cpu().long()
        h = _int_conv(x, _fixed(self.embed.weight / self.FEATURE_SCALE, one), _fixed(self.embed.bias, one))
        h = h.clamp_(min=0)  # scale 2**F
        h = _int_conv(h, _fixed(self.context.weight, one), _fixed(self.context.bias, one * one))
        h = torch.div(h.clamp_(min=0), one, rounding_mode="floor")  # back to scale 2**F
        logits = _int_conv(h, _fixed(self.out.weight, one), _fixed(self.out.bias, one * one))
        return (logits > 0).to(features.device)


def _fixed(tensor: torch.Tensor, scale: int) -> torch.Tensor:
    return torch.round(tensor.detach().double().cpu() * scale).long()


def _int_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """An integer 'same' convolution (stride 1, odd kernel): shifted copies, then one product."""
    k = weight.shape[-1]
    if k > 1:
        pad = k // 2
        padded = F.pad(x, (pad, pad, pad, pad))
        height, width = x.shape[-2:]
        x = torch.stack([padded[..., i : i + height, j : j + width] for i in range(k) for j in range(k)], dim=2)
        x = x.flatten(1, 2)  # (B, C*k*k, H, W), channel-major like weight.flatten(1)
    out = torch.einsum("oc,bchw->bohw", weight.flatten(1), x)
    return out + bias.view(1, -1, 1, 1)
