"""Adapter modules: SFMA (spatial-frequency modulation adapter) and the paper's ablation variants.

The modules here know nothing about codecs: each maps a feature map (B, C, H, W) to one of the
same shape, as ``x + sum(branch(x))``. The spatial branch (SMA) gates a depth-wise 5x5 view of
the features with a second projection; the frequency branch (FMA) rescales the amplitude of the
half spectrum (rfft2) of a projection and keeps its phase. DESIGN.md section 2 gives the maths.

All 1x1 projections that read the same input are one convolution (``down``), split afterwards:
the same numbers as separate projections, in one pass over the input.

Initialisation (``init``):

- ``"identity"`` (our default): the last 1x1 convolution of every branch starts at zero, so a
  fresh adapter returns its input exactly and training starts from the base codec's behaviour
  (as LoRA does). Gradients still reach every parameter after the first step.
- ``"reference"``: PyTorch's default convolution init everywhere, as the paper's released code.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidArgumentError, unknown_name
from .variants import INITS, VARIANTS

FFT_NORM = "backward"  # torch's default; the reference code calls rfft2 / irfft2 without a norm


def _pointwise(module: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution as one matrix product over the flattened pixels: ``W @ x + b``.

    On CPU this is faster than the convolution kernel for NCHW inputs (no layout reorder), and
    the bias rides in the product's accumulator. ``residual`` (B, C_out, ...) is added in the
    same product: ``residual + b + W @ x``.
    """
    batch, channels = x.shape[:2]
    weight = module.weight.view(module.out_channels, channels)
    start = module.bias.view(1, -1, 1)
    if residual is not None:
        start = residual.reshape(batch, module.out_channels, -1) + start
    out = torch.baddbmm(start, weight.expand(batch, -1, -1), x.reshape(batch, channels, -1))
    return out.view(batch, module.out_channels, *x.shape[2:])


class _DepthwiseConv(torch.autograd.Function):
    """Depth-wise convolution (stride 1, 'same' padding) with a faster weight gradient on CPU.

    The forward is PyTorch's. For the weight gradient, PyTorch's CPU kernel is an order of
    magnitude slower than the forward; the same sums are one grouped convolution of the padded
    input with the output gradient as kernel (per channel and batch item), summed over the batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        channels, _, k, _ = weight.shape
        pad = k // 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv_transpose2d(grad, weight, padding=pad, groups=channels)
        if ctx.needs_input_grad[1]:
            batch, _, height, width = x.shape
            padded = F.pad(x, (pad, pad, pad, pad)).transpose(0, 1).reshape(1, channels * batch, height + 2 * pad, width + 2 * pad)
            kernels = grad.transpose(0, 1).reshape(channels * batch, 1, height, width)
            grad_w = F.conv2d(padded, kernels, groups=channels * batch).view(channels, batch, k, k)
            grad_w = grad_w.sum(1, keepdim=True)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def _depthwise(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a depth-wise 'same' convolution; the fast backward when autograd records."""
    if _autograd_on(x, module.weight, module.bias) and x.device.type == "cpu":
        return _DepthwiseConv.apply(x, module.weight, module.bias)
    return module(x)


def _autograd_on(*tensors: torch.Tensor) -> bool:
    """Whether autograd records here; in-place shortcuts that would break backward are off then."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class SpatialModulation(nn.Module):
    """SMA on projected features: ``up(relu(dw5x5(a) * b))`` with ``a, b`` the two projections."""

    in_width_factor = 2  # needs two d-wide projections of the input

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(middle_dim, middle_dim, 5, padding=2, groups=middle_dim)
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def hidden(self, projected: torch.Tensor) -> torch.Tensor:
        """The branch before its last 1x1 convolution: ``relu(dw5x5(a) * b)``."""
        a, b = projected.chunk(2, dim=1)
        gated = _depthwise(self.dw, a)
        if _autograd_on(gated, b):
            gated = gated * b  # backward needs dw(a), so no in-place product here
        else:
            gated.mul_(b)
        return gated.relu_()

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.up, self.hidden(projected))


class FrequencyModulation(nn.Module):
    """FMA on projected features: a learned, input-dependent gain on the amplitude spectrum.

    The gain ``sigmoid(mix(relu(dw3x3(|Z|))))`` is computed on the amplitude of the half
    spectrum only and multiplies the complex spectrum (as a real gain on its real and imaginary
    parts), which scales the amplitude and keeps the phase without a polar round trip. FFTs run
    in float32 (half precision FFTs only take powers of two) and the result is cast back.
    """

    in_width_factor = 1

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(middle_dim, middle_dim, 3, padding=1, groups=middle_dim)
        self.mix = nn.Conv2d(middle_dim, middle_dim, 1)
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def hidden(self, projected: torch.Tensor) -> torch.Tensor:
        """The branch before its last 1x1 convolution: ``relu(irfft2(gain * rfft2(z)))``."""
        height, width = projected.shape[-2:]
        spectrum = torch.fft.rfft2(projected.float(), norm=FFT_NORM)
        parts = torch.view_as_real(spectrum)
        if _autograd_on(spectrum, self.dw.weight):
            amplitude = spectrum.abs()  # its gradient is 0 where the spectrum is 0 (hypot's is NaN)
        else:
            amplitude = torch.hypot(parts[..., 0], parts[..., 1])  # the same numbers, faster
        amplitude = amplitude.to(self.dw.weight.dtype)
        gain = _pointwise(self.mix, _depthwise(self.dw, amplitude).relu_()).sigmoid_().float().unsqueeze(-1)
        if _autograd_on(spectrum, gain):
            parts = parts * gain  # backward of |Z| needs the unscaled spectrum
        else:
            parts.mul_(gain)
        filtered = torch.fft.irfft2(torch.view_as_complex(parts), s=(height, width), norm=FFT_NORM)
        return filtered.to(projected.dtype).relu_()

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.up, self.hidden(projected))


class Bottleneck(nn.Module):
    """The naive adapter's branch: ``up(relu(z))`` on one d-wide projection."""

    in_width_factor = 1

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def hidden(self, projected: torch.Tensor) -> torch.Tensor:
        return F.relu(projected)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.up, self.hidden(projected))


BRANCHES: dict[str, type[nn.Module]] = {
    "spatial": SpatialModulation,
    "frequency": FrequencyModulation,
    "bottleneck": Bottleneck,
}


class ParallelAdapter(nn.Module):
    """``x + sum_i up_i(hidden_i(down(x)[i]))``: parallel branches behind one fused projection.

    Fast path (same numbers): the 1x1 convolutions are matrix products on the flattened pixels,
    and the branches' last convolutions accumulate in place into one buffer that starts as
    ``x + sum of their biases``, so the residual and the branch sum cost no extra passes.
    """

    def __init__(self, channels: int, middle_dim: int, branches: tuple[str, ...]) -> None:
        super().__init__()
        self.branch_names = branches
        self.branches = nn.ModuleList(BRANCHES[name](channels, middle_dim) for name in branches)
        self.widths = [b.in_width_factor * middle_dim for b in self.branches]
        self.down = nn.Conv2d(channels, sum(self.widths), 1)

    checkpoint = False  # recompute the branches in backward instead of keeping their activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and _autograd_on(x, self.down.weight):
            return torch.utils.checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = _pointwise(self.down, x).split(self.widths, dim=1)
        hidden = [branch.hidden(part) for branch, part in zip(self.branches, projected)]
        batch, channels = x.shape[:2]
        bias = sum(branch.up.bias for branch in self.branches).view(1, -1, 1)
        out = x.reshape(batch, channels, -1) + bias
        for branch, h in zip(self.branches, hidden):
            weight = branch.up.weight.view(channels, -1).expand(batch, -1, -1)
            out = out.baddbmm_(weight, h.reshape(batch, h.shape[1], -1))
        return out.view_as(x)

    def zero_output(self) -> None:
        """Make the adapter an exact identity by zeroing each branch's last convolution."""
        for branch in self.branches:
            nn.init.zeros_(branch.up.weight)
            nn.init.zeros_(branch.up.bias)


class Adapter(nn.Module):
    """One adapter of a named variant (see ``VARIANTS``): one or more ParallelAdapters in a row."""

    def __init__(
        self, channels: int, middle_dim: int = 64, variant: str = "sfma", init: str = "identity"
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise unknown_name("adapter variant", variant, VARIANTS)
        if init not in INITS:
            raise unknown_name("adapter init", init, INITS)
        if middle_dim < 1 or channels < 1:
            raise InvalidArgumentError(f"channels and middle_dim must be positive, got {channels}, {middle_dim}")
        self.channels, self.middle_dim, self.variant = channels, middle_dim, variant
        self.stages = nn.ModuleList(
            ParallelAdapter(channels, middle_dim, branches) for branches in VARIANTS[variant]
        )
        if init == "identity":
            for stage in self.stages:
                stage.zero_output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def set_checkpointing(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Trade time for memory in training: every adapter in ``module`` keeps only its input and
    recomputes its branches during backward (same numbers; about one extra adapter forward)."""
    for sub in module.modules():
        if isinstance(sub, ParallelAdapter):
            sub.checkpoint = enabled
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters())
