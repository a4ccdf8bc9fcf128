"""Adapter modules: SFMA (spatial-frequency modulation adapter) and the paper's ablation variants.

The modules here know nothing about codecs: each maps a feature map (B, C, H, W) to one of the
same shape, as ``x + sum(branch(x))``. The spatial branch (SMA) gates a depth-wise 5x5 view of
the features with a second projection; the frequency branch (FMA) rescales the amplitude of the
half spectrum (rfft2) of a projection and keeps its phase. The paper gives the maths;
``benchmarks/baseline_sfma.py`` writes it out plainly.

All 1x1 projections that read the same input are one convolution (``down``), split afterwards:
the same numbers as separate projections, in one pass over the input.

Initialisation (``init``):

- ``"identity"`` (our default): the last 1x1 convolution of every branch starts at zero, so a
  fresh adapter returns its input exactly and training starts from the base codec's behaviour
  (as LoRA does). Gradients still reach every parameter after the first step.
- ``"reference"``: PyTorch's default convolution init everywhere, as the paper's released code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
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


# -- gradients by hand ---------------------------------------------------------------------------
# In training an adapter keeps only its input; its backward recomputes the cheap intermediates
# (one projection, the branches' depth-wise convolutions, products and spectra) and applies the
# chain rule below, with no autograd graph inside the adapter. Gradients are computed in float32 (or
# float64) whatever the activations' dtype under autocast.


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a half-precision type (float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def _weight_grad(grad_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The gradient of a 1x1 convolution's weight, sum over the batch of ``grad_out @ inputs^T``."""
    return torch.bmm(_flat(grad_out), _flat(inputs).transpose(1, 2).to(grad_out.dtype)).sum(0)


def _pointwise_input_grad(module: nn.Conv2d, grad_out: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``W^T @ grad_out`` (+ ``residual``): the input gradient of a 1x1 convolution."""
    batch = grad_out.shape[0]
    weight = module.weight.view(module.out_channels, -1).t().to(grad_out.dtype).expand(batch, -1, -1)
    if residual is None:
        out = torch.bmm(weight, _flat(grad_out))
    else:
        out = torch.baddbmm(_flat(residual), weight, _flat(grad_out))
    return out.view(batch, -1, *grad_out.shape[2:])


def _depthwise_grads(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input, weight and bias gradients of a depth-wise 'same' convolution (stride 1).

    On CPU the weight gradient is one grouped convolution of the input with the output gradient
    as kernel (one group per channel and batch item), summed over the batch: PyTorch's CPU kernel
    for it is an order of magnitude slower than the forward. Elsewhere PyTorch's own backward.
    """
    channels, _, k, _ = weight.shape
    pad = k // 2
    x, weight = x.to(grad.dtype), weight.to(grad.dtype)
    if x.device.type != "cpu":
        return torch.ops.aten.convolution_backward(grad, x, weight, [channels], [1, 1], [pad, pad], [1, 1], False,
                                                   [0, 0], channels, (True, True, True))
    grad_x = F.conv_transpose2d(grad, weight, padding=pad, groups=channels)
    batch, _, height, width = x.shape
    images = x.reshape(1, batch * channels, height, width)
    kernels = grad.reshape(batch * channels, 1, height, width)
    grad_w = F.conv2d(images, kernels, padding=pad, groups=batch * channels).view(batch, channels, 1, k, k).sum(0)
    return grad_x, grad_w, grad.sum((0, 2, 3))


def _accumulate(out: torch.Tensor, weight: torch.Tensor, hidden: torch.Tensor) -> None:
    """``out += weight @ hidden`` over the flattened pixels, in ``out``'s dtype (under autocast
    the residual sum stays in the wider type of the input and the biases)."""
    with torch.autocast(out.device.type, enabled=False):
        out.baddbmm_(weight.to(out.dtype).expand(hidden.shape[0], -1, -1), _flat(hidden).to(out.dtype))


def _relu_grad_(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient through ``output = relu(...)``, in place on ``grad``: autograd's own kernel
    for it, one pass (a mask and ``masked_fill_`` take ten times as long on CPU)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, output.to(grad.dtype), 0, grad_input=grad)


def _autograd_on(*tensors: torch.Tensor) -> bool:
    """Whether autograd records here."""
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
        gated = self.dw(a)
        return (gated * b if torch.is_grad_enabled() else gated.mul_(b)).relu_()

    def recompute(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden features and what their backward needs besides them (``dw5x5(a)``)."""
        a, b = projected.chunk(2, dim=1)
        gated = self.dw(a)
        return (gated * b).relu_(), gated

    def hidden_grads(self, projected: torch.Tensor, work: list, grad_projected: torch.Tensor) -> list[torch.Tensor]:
        """Write the gradient of ``projected`` into ``grad_projected`` (which may be ``projected``
        itself) and return the gradients of ``dw``'s weight and bias. ``work`` is ``[hidden,
        state, grad of hidden]``, emptied here so that each is freed as soon as it is used."""
        hidden, gated, grad = work
        work.clear()
        a, b = projected.chunk(2, dim=1)
        grad_a_out, grad_b_out = grad_projected.chunk(2, dim=1)
        grad = _relu_grad_(grad, hidden)
        del hidden
        grad_gated = grad * b.to(grad.dtype)
        torch.mul(grad, gated.to(grad.dtype), out=grad_b_out)  # b is not read again
        del grad, gated
        grad_a, grad_w, grad_bias = _depthwise_grads(a, self.dw.weight, grad_gated)
        del grad_gated
        grad_a_out.copy_(grad_a)
        return [grad_w, grad_bias]

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.up, self.hidden(projected))

    def hidden_channels_last(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``hidden`` of the projection of a channels-last ``x`` (``weight``, ``bias``: this branch's
        rows of ``down``), channels-last: each half projected on its own so that the depth-wise
        convolution reads a dense map (a channel slice of a channels-last map is not one)."""
        a, b = (F.conv2d(x, w, c) for w, c in zip(weight.chunk(2), bias.chunk(2)))
        return self.dw(a).mul_(b).relu_()


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
        spectrum, _, _, gain = self._gain(projected)
        return self._filtered(projected, spectrum, gain, in_place=not torch.is_grad_enabled())

    @staticmethod
    def _filtered(projected: torch.Tensor, spectrum: torch.Tensor, gain: torch.Tensor, in_place: bool) -> torch.Tensor:
        """``relu(irfft2(gain * spectrum))`` in ``projected``'s dtype (``spectrum`` overwritten if ``in_place``)."""
        parts = torch.view_as_real(spectrum)
        parts = parts.mul_(_wide(gain).unsqueeze(-1)) if in_place else parts * _wide(gain).unsqueeze(-1)
        filtered = torch.fft.irfft2(torch.view_as_complex(parts), s=projected.shape[-2:], norm=FFT_NORM)
        return filtered.to(projected.dtype).relu_()

    def _gain(self, projected: torch.Tensor):
        """The spectrum of ``projected``, its amplitude, ``relu(dw3x3(amplitude))`` and the gain."""
        spectrum = torch.fft.rfft2(_wide(projected), norm=FFT_NORM)
        amplitude = spectrum.abs()
        mixed = self.dw(amplitude.to(self.dw.weight.dtype)).relu_()
        return spectrum, amplitude, mixed, _pointwise(self.mix, mixed).sigmoid_()

    def recompute(self, projected: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The hidden features and what their backward needs: spectrum, amplitude, relu(dw), gain.
        (Keeping the hidden features from the forward instead would save an inverse FFT per
        image for memory the size of the branch's output: on CPU it cost more memory than the
        FFT costs time, ``benchmarks.training``.)"""
        state = self._gain(projected)
        return self._filtered(projected, state[0], state[3], in_place=False), state

    def hidden_grads(self, projected: torch.Tensor, work: list, grad_projected: torch.Tensor) -> list[torch.Tensor]:
        """As ``SpatialModulation.hidden_grads``; returns the gradients of dw and mix (weight, bias)."""
        hidden, (spectrum, amplitude, mixed, gain), grad = work
        work.clear()
        width = hidden.shape[-1]
        grad = _relu_grad_(grad, hidden)
        del hidden
        # irfft2's adjoint (as autograd's): rfft2 scaled by 1/(H*W), bins with a mirror image doubled
        grad_spectrum = torch.fft.rfft2(grad, norm="forward")
        del grad
        mirrored = width - grad_spectrum.shape[-1]
        if mirrored > 0:
            grad_spectrum[..., 1 : 1 + mirrored].mul_(2)
        grad_parts, parts = torch.view_as_real(grad_spectrum), torch.view_as_real(spectrum)
        gain = _wide(gain)
        grad_gain = grad_parts[..., 0] * parts[..., 0]
        grad_gain.addcmul_(grad_parts[..., 1], parts[..., 1])
        grad_parts.mul_(gain.unsqueeze(-1))  # now the gradient of the spectrum through the product
        grad_logits = grad_gain.mul_(gain).mul_(1 - gain)  # sigmoid'
        del gain
        grads = [_weight_grad(grad_logits, mixed).view_as(self.mix.weight), grad_logits.sum((0, 2, 3))]
        grad_mixed = _relu_grad_(_pointwise_input_grad(self.mix, grad_logits), mixed)
        del grad_logits, mixed
        grad_amplitude, grad_w, grad_bias = _depthwise_grads(amplitude, self.dw.weight, grad_mixed)
        del grad_mixed
        # |Z|'s gradient: Z / |Z| (zero where the spectrum is zero, as autograd's)
        grad_parts.addcmul_(parts, torch.where(amplitude > 0, grad_amplitude.div_(amplitude), 0).unsqueeze(-1))
        del grad_amplitude, amplitude, parts, spectrum
        grad_projected.copy_(_rfft2_adjoint(grad_spectrum, width))
        return [grad_w, grad_bias] + grads

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.up, self.hidden(projected))

    def hidden_channels_last(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``hidden`` of the projection of a channels-last ``x``, in NCHW (the FFTs' layout).

        The projection is one matrix product that reads the channels-last pixels transposed and
        writes NCHW rows, so no layout conversion is made; its bias is added to the spectrum's DC
        bin (the transform of a constant map), which saves a pass over the projection."""
        batch, _, height, width = x.shape
        pixels = _pixels(x).transpose(1, 2)
        projected = torch.bmm(weight.flatten(1).expand(batch, -1, -1), pixels).view(batch, -1, height, width)
        spectrum = torch.fft.rfft2(_wide(projected), norm=FFT_NORM)
        spectrum[..., 0, 0] += _wide(bias) * (height * width)
        mixed = self.dw(spectrum.abs().to(self.dw.weight.dtype)).relu_()
        return self._filtered(projected, spectrum, _pointwise(self.mix, mixed).sigmoid_(), in_place=True)


def _pixels(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) as (B, H*W, C): a view for both NCHW and channels-last maps."""
    return t.permute(0, 2, 3, 1).flatten(1, 2)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a dense channels-last 4-D map (and not also a dense NCHW one, as maps
    with one channel or one pixel are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _rfft2_adjoint(grad_spectrum: torch.Tensor, width: int) -> torch.Tensor:
    """The gradient of real ``z`` from that of ``rfft2(z)`` (unnormalised), overwriting
    ``grad_spectrum``: the real part of the inverse DFT of the zero-padded half spectrum (autograd's
    formula) without building the full one. That real part is the inverse of the padded
    spectrum's Hermitian part, whose half is: the bins with a mirror image halved, and the
    self-mirrored columns (0 and, for even widths, W/2) averaged with their conjugate mirror
    rows; a real inverse FFT of that Hermitian half spectrum is exact on every backend."""
    mirrored = width - grad_spectrum.shape[-1]
    if mirrored > 0:
        grad_spectrum[..., 1 : 1 + mirrored].mul_(0.5)
    for column in [0] + ([grad_spectrum.shape[-1] - 1] if width % 2 == 0 else []):
        values = grad_spectrum[..., column]
        mirror = torch.roll(torch.flip(values, (-1,)), 1, -1).conj()  # row -k of each row k
        grad_spectrum[..., column] = (values + mirror) / 2
    return torch.fft.irfft2(grad_spectrum, s=(grad_spectrum.shape[-2], width), norm="forward")


class Bottleneck(nn.Module):
    """The naive adapter's branch: ``up(relu(z))`` on one d-wide projection."""

    in_width_factor = 1

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def hidden(self, projected: torch.Tensor) -> torch.Tensor:
        return F.relu(projected)

    def recompute(self, projected: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.relu(projected), None

    def hidden_grads(self, projected: torch.Tensor, work: list, grad_projected: torch.Tensor) -> list[torch.Tensor]:
        hidden, _, grad = work
        work.clear()
        grad_projected.copy_(_relu_grad_(grad, hidden))
        return []

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.up, self.hidden(projected))

    def hidden_channels_last(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, bias).relu_()


BRANCHES: dict[str, type[nn.Module]] = {
    "spatial": SpatialModulation,
    "frequency": FrequencyModulation,
    "bottleneck": Bottleneck,
}


class _Recomputed(torch.autograd.Function):
    """A ParallelAdapter under autograd: the forward is the inference path (no graph inside), it
    keeps its input only, and the backward recomputes what else it needs (``ParallelAdapter.grads``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, adapter: "ParallelAdapter", *parameters: torch.Tensor) -> torch.Tensor:
        ctx.adapter = adapter
        ctx.autocast = autocast_state(x.device.type)
        ctx.save_for_backward(x)
        return adapter._forward(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x, grads = ctx.adapter.grads(x, grad, ctx.autocast, ctx.needs_input_grad[0])
        return (grad_x, None, *grads)


CHUNK_ELEMENTS = 1 << 21  # of adapter input per chunk in training, on CPU (32x that elsewhere)


def batch_chunks(x: torch.Tensor) -> list[slice]:
    """Slices of the batch that an adapter (or a frozen GDN in training) processes in turn: its
    intermediates are several times the size of its input, so large batches of large features
    go a few images at a time (the same numbers). On CPU a chunk holds about 8 MB of input (one
    128-channel 128x128 feature map): its intermediates then fit in memory the allocator has
    mapped already, rather than in fresh pages that the kernel must zero (``benchmarks.training``
    compares chunk sizes). Elsewhere 256 MB: on a GPU each call's fixed cost counts for more."""
    budget = CHUNK_ELEMENTS if x.device.type == "cpu" else 32 * CHUNK_ELEMENTS
    step = max(1, budget // max(1, x[0].numel()))
    return [slice(start, start + step) for start in range(0, x.shape[0], step)]


def autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    """(device type, whether autocast is on there, its dtype), on every torch we support."""
    try:
        return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch before 2.4: one pair of functions per device type
        if device_type == "cpu":
            return device_type, torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        return device_type, torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()


@contextlib.contextmanager
def _recomputing(autocast: tuple[str, bool, torch.dtype]) -> Iterator[None]:
    """No autograd, and the forward's autocast state (the recomputed numbers are the forward's)."""
    device_type, enabled, dtype = autocast
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
        yield


class ParallelAdapter(nn.Module):
    """``x + sum_i up_i(hidden_i(down(x)[i]))``: parallel branches behind one fused projection.

    Fast path (same numbers): the 1x1 convolutions are matrix products on the flattened pixels,
    and the branches' last convolutions accumulate in place into one buffer that starts as
    ``x + sum of their biases``, so the residual and the branch sum cost no extra passes.

    In training (autograd on) the adapter keeps only its input: its activations are recomputed
    in backward, a few images and one branch at a time, and its gradients computed by hand
    (``grads``), which takes less memory and less time than autograd's graph of the same
    operations. That is an optimisation branches opt into by defining ``recompute`` and
    ``hidden_grads``; with a branch that does not (or ``manual_backward = False``) the adapter
    trains with autograd through ``hidden`` and ``up``, the same numbers.
    """

    manual_backward = True

    def __init__(self, channels: int, middle_dim: int, branches: tuple[str, ...]) -> None:
        super().__init__()
        self.branch_names = branches
        self.branches = nn.ModuleList(BRANCHES[name](channels, middle_dim) for name in branches)
        self.widths = [b.in_width_factor * middle_dim for b in self.branches]
        self.down = nn.Conv2d(channels, sum(self.widths), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parameters = list(self.parameters())
        if not _autograd_on(x, *parameters):
            return self._forward(x)
        if self.manual_backward and all(hasattr(branch, "hidden_grads") for branch in self.branches):
            return _Recomputed.apply(x, self, *parameters)
        return self._autograd_forward(x)

    def _autograd_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same sum with autograd recording every step (no hand-written backward)."""
        out = x
        for branch, part in zip(self.branches, _pointwise(self.down, x).split(self.widths, dim=1)):
            out = out + _pointwise(branch.up, branch.hidden(part))
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inference path (also the training forward, which keeps nothing of it)."""
        if is_channels_last(x):
            return self._forward_channels_last(x)
        batch, channels = x.shape[:2]
        bias = sum(branch.up.bias for branch in self.branches).view(1, -1, 1)
        out = x.reshape(batch, channels, -1) + bias
        for images in batch_chunks(x):
            projected = _pointwise(self.down, x[images]).split(self.widths, dim=1)
            for branch, part in zip(self.branches, projected):
                _accumulate(out[images], branch.up.weight.view(channels, -1), branch.hidden(part))
            del projected
        return out.view_as(x)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``_forward`` on a channels-last map (``icmh_hub.core.inference``), channels-last out.

        The projections are oneDNN convolutions on the channels-last map (bias included), and each
        branch's last 1x1 convolution is one matrix product that adds into the output's pixels
        (B, H*W, C) in place, reading the hidden map in whichever layout its branch made it. The
        numbers are ``_forward``'s up to float rounding (another summation order)."""
        bias = sum(branch.up.bias for branch in self.branches).view(1, -1, 1, 1)
        out = (x + bias).contiguous(memory_format=torch.channels_last)
        weights = self.down.weight.split(self.widths)
        biases = self.down.bias.split(self.widths)
        for images in batch_chunks(x):
            pixels = _pixels(out[images])
            for branch, weight, bias in zip(self.branches, weights, biases):
                hidden = branch.hidden_channels_last(x[images], weight, bias)
                up = branch.up.weight.flatten(1).t().to(pixels.dtype)
                pixels.baddbmm_(_pixels(hidden).to(pixels.dtype), up.expand(pixels.shape[0], -1, -1))
        return out

    def grads(self, x: torch.Tensor, grad: torch.Tensor, autocast: tuple[str, bool, torch.dtype], input_grad: bool = True):
        """Gradients of ``x`` (None unless ``input_grad``) and of every parameter (in
        ``parameters()`` order) for the output gradient ``grad``. The intermediates are
        recomputed under the forward's autocast state, one branch at a time (and for large
        batches of large features, a few images at a time)."""
        grad = _wide(grad)
        grad_x = torch.empty(x.shape, dtype=grad.dtype, device=x.device) if input_grad else None
        totals: list[torch.Tensor] | None = None
        for images in batch_chunks(x):
            grads = self._chunk_grads(x[images], grad[images], autocast, None if grad_x is None else grad_x[images])
            totals = grads if totals is None else [t.add_(g) for t, g in zip(totals, grads)]
        grad_x = None if grad_x is None else grad_x.to(x.dtype)
        return grad_x, [g.to(p.dtype) for g, p in zip(totals, self.parameters(), strict=True)]

    def _chunk_grads(self, x: torch.Tensor, grad: torch.Tensor, autocast: tuple[str, bool, torch.dtype],
                     grad_x: torch.Tensor | None) -> list[torch.Tensor]:
        """``grads`` for some images: writes their input gradient into ``grad_x`` (if given)."""
        with _recomputing(autocast):
            projected = _pointwise(self.down, x)
        # the projection's gradient overwrites the projection, part by part, once that part is used
        grad_projected = projected if projected.dtype == grad.dtype else torch.empty_like(projected, dtype=grad.dtype)
        grad_up_bias = grad.sum((0, 2, 3))
        grads = []
        for branch, part, grad_part in zip(self.branches, projected.split(self.widths, dim=1),
                                           grad_projected.split(self.widths, dim=1)):
            with _recomputing(autocast):
                hidden, state = branch.recompute(part)
            up_weight = _weight_grad(grad, hidden).view_as(branch.up.weight)
            work = [hidden, state, _pointwise_input_grad(branch.up, grad)]
            del hidden, state
            grads += branch.hidden_grads(part, work, grad_part) + [up_weight, grad_up_bias.clone()]
        grads += [_weight_grad(grad_projected, x).view_as(self.down.weight), grad_projected.sum((0, 2, 3))]
        if grad_x is not None:
            weight = self.down.weight.view(self.down.out_channels, -1).t().to(grad.dtype).expand(x.shape[0], -1, -1)
            torch.baddbmm(_flat(grad), weight, _flat(grad_projected), out=_flat(grad_x))
        return grads

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


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters())
