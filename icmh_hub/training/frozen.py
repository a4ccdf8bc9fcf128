"""Frozen layers that keep (almost) nothing for backward.

When only the adapters train, the frozen codec and the frozen recognition model still pass
gradients back (to the adapters, and through the task model to the reconstruction), but their
weight gradients are never needed. A convolution's or a linear layer's input gradient needs only
its weight, an eval-mode batch norm's only its scale; autograd keeps their inputs anyway, since
one saved set serves every gradient of the op. A GDN's input gradient needs its input, but not
the normalisation autograd also keeps (it is one 1x1 convolution away).

``frozen_layers(codec)`` runs the block's frozen convolutions, linear layers and eval-mode batch
norms (anywhere: a torch function mode) and the frozen GDN layers of ``codec`` (an instance
forward, removed on exit) through functions that save only that. Same outputs, the same input
gradients up to float rounding, and the inputs are freed as soon as the forward has used them.
Layers with trainable weights (full fine-tuning, the adapters' own) are left alone.

Time matters as much as memory here (adapter tuning should cost less than full fine-tuning,
``benchmarks.training``): a frozen convolution's input gradient is the adjoint convolution, which
needs no stand-in for the input; a GDN runs its 1x1 convolution as a matrix product, a few
images at a time, so that its temporaries stay small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from .._compressai import compressai  # noqa: F401  (first, without its import warning)
from compressai.layers import GDN

from ..core.adapters import autocast_state, batch_chunks


def _frozen(input: torch.Tensor, *weights: torch.Tensor | None) -> bool:
    """Autograd on for ``input`` but for none of ``weights``."""
    return (torch.is_grad_enabled() and isinstance(input, torch.Tensor) and input.requires_grad
            and all(w is None or not w.requires_grad for w in weights))


def _pair(value: Any, size: int) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value] * size


class _Convolution(torch.autograd.Function):
    """A convolution (plain or transposed) whose backward gives the input gradient only. The
    forward is the caller's own function (so autocast treats it as it would)."""

    @staticmethod
    def forward(ctx, x, weight, bias, call, stride, padding, dilation, transposed, output_padding, groups):
        ctx.arguments = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        ctx.save_for_backward(weight)
        return call(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return (_adjoint(grad, weight.to(grad.dtype), ctx.input_shape, *ctx.arguments).to(ctx.input_dtype),) + (None,) * 9


def _adjoint(grad: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size, stride: list[int], padding: list[int],
             dilation: list[int], transposed: bool, output_padding: list[int], groups: int) -> torch.Tensor:
    """A convolution's input gradient as the adjoint convolution (a transposed convolution's is
    the plain one). ``aten.convolution_backward`` would take the input's shape from an expanded
    dummy, which the CPU kernel copies into a full tensor first (the input's size, written)."""
    dims = weight.dim() - 2
    if transposed:
        return _FUNCTIONS[dims][0](grad, weight, None, stride, padding, dilation, groups)
    # the rows and columns the forward's stride dropped at the end come back as output padding
    extra = [size - ((out - 1) * s - 2 * p + d * (k - 1) + 1) for size, out, s, p, d, k in
             zip(input_shape[2:], grad.shape[2:], stride, padding, dilation, weight.shape[2:])]
    return _FUNCTIONS[dims][1](grad, weight, None, stride, padding, extra, groups, dilation)


_FUNCTIONS = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}


def _convolution(func, x, weight, bias, stride, padding, dilation, groups, transposed=False, output_padding=0):
    if not _frozen(x, weight, bias) or isinstance(padding, str):
        return NotImplemented
    dims = weight.dim() - 2
    if transposed:
        def call(x, weight, bias):
            return func(x, weight, bias, stride, padding, output_padding, groups, dilation)
    else:
        def call(x, weight, bias):
            return func(x, weight, bias, stride, padding, dilation, groups)
    return _Convolution.apply(x, weight, bias, call, _pair(stride, dims), _pair(padding, dims), _pair(dilation, dims),
                              transposed, _pair(output_padding, dims), groups)


def _conv(func):
    def lean(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        return _convolution(func, input, weight, bias, stride, padding, dilation, groups)
    return lean


def _conv_transpose(func):
    def lean(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        return _convolution(func, input, weight, bias, stride, padding, dilation, groups, True, output_padding)
    return lean


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.input_dtype = x.dtype
        ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return (grad @ weight.to(grad.dtype)).to(ctx.input_dtype), None, None


def _linear(input, weight, bias=None):
    return _Linear.apply(input, weight, bias) if _frozen(input, weight, bias) else NotImplemented


class _AffineNorm(torch.autograd.Function):
    """Eval-mode batch norm: a per-channel affine map, whose input gradient is ``grad * scale``."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, eps):
        ctx.input_dtype = x.dtype
        scale = torch.rsqrt(running_var.float() + eps)
        if weight is not None:
            scale = scale * weight.float()
        ctx.save_for_backward(scale.view(1, -1, *([1] * (x.dim() - 2))))
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return (grad * scale.to(grad.dtype)).to(ctx.input_dtype), None, None, None, None, None


def _batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    if training or running_mean is None or running_var is None or not _frozen(input, weight, bias):
        return NotImplemented
    return _AffineNorm.apply(input, running_mean, running_var, weight, bias, eps)


_LEAN: dict[Callable, Callable] = {
    **{f: _conv(f) for f in (torch.conv1d, torch.conv2d, torch.conv3d)},
    **{f: _conv_transpose(f) for f in (torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d)},
    F.linear: _linear,
    F.batch_norm: _batch_norm,
}


class _LeanLayers(TorchFunctionMode):
    """Frozen convolutions, linear layers and eval-mode batch norms through the functions above."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        lean = _LEAN.get(func)
        if lean is not None:
            out = lean(*args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


def _norm(flat: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``beta + gamma @ x^2`` over the flattened pixels (into ``out`` if given): GDN's 1x1
    convolution as one matrix product (on CPU several times as fast as the convolution kernel)."""
    return torch.baddbmm(beta.view(1, -1, 1), gamma.expand(flat.shape[0], -1, -1), flat * flat, out=out)


class _Normalisation(torch.autograd.Function):
    """GDN / inverse GDN, ``y = x * f(n)`` with ``n = conv1x1(x^2, gamma) + beta`` and ``f`` =
    rsqrt (GDN) or sqrt (inverse), a few images at a time: keeps ``x`` only and recomputes ``n``
    in backward. Gradients in float32 (or float64)."""

    @staticmethod
    def forward(ctx, x, gamma, beta, inverse):
        ctx.inverse = inverse
        ctx.save_for_backward(x, gamma, beta)
        batch, channels = x.shape[:2]
        flat, gamma = x.reshape(batch, channels, -1), gamma.reshape(channels, channels)
        mixed_precision = autocast_state(x.device.type)[1]
        out = None if mixed_precision else torch.empty_like(flat)
        for images in batch_chunks(x):
            if mixed_precision:  # CompressAI's own operations, so that autocast casts each as it would there
                norm = _norm(flat[images], gamma, beta)
                part = flat[images] * (torch.sqrt(norm) if inverse else torch.rsqrt(norm))
                if out is None:  # the output's dtype is the first slice's
                    out = torch.empty(flat.shape, dtype=part.dtype, device=x.device)
                out[images] = part
            else:  # the same operations in place, in the output's memory
                norm = _norm(flat[images], gamma.to(x.dtype), beta.to(x.dtype), out[images])
                (norm.sqrt_() if inverse else norm.rsqrt_()).mul_(flat[images])
        return out.view(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, gamma, beta = ctx.saved_tensors
        dtype = torch.promote_types(grad.dtype, torch.float32)
        batch, channels = x.shape[:2]
        gamma, beta = gamma.to(dtype).reshape(channels, channels), beta.to(dtype)
        flat, grad = x.reshape(batch, channels, -1), grad.reshape(batch, channels, -1)
        grad_x = torch.empty(flat.shape, dtype=dtype, device=x.device)
        for images in batch_chunks(x):
            xs, gs = flat[images].to(dtype), grad[images].to(dtype)
            # grad_x = grad * f + 2 x * gamma^T (grad * x * f'(n)); the 2 cancels the 1/2 in f'
            f = _norm(xs, gamma, beta)
            inner = gs * xs
            if ctx.inverse:  # f = sqrt(n), f' = 1 / (2 f)
                f.sqrt_()
                inner.div_(f)
            else:  # f = rsqrt(n), f' = -f^3 / 2
                f.rsqrt_()
                inner.mul_(f.pow(3)).neg_()
            part = torch.bmm(gamma.t().expand(xs.shape[0], -1, -1), inner, out=grad_x[images])  # n's adjoint
            del inner
            part.mul_(xs).addcmul_(gs, f)
        return grad_x.view(x.shape).to(x.dtype), None, None, None


def _lean_normalisation(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for a GDN module that runs ``_Normalisation`` while the layer is frozen (also
    where its input needs no gradient: the matrix product is the faster forward), the module's
    own forward otherwise."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        if module.beta.requires_grad or module.gamma.requires_grad or not isinstance(x, torch.Tensor):
            return type(module).forward(module, x)
        with torch.no_grad():
            gamma, beta = module.gamma_reparam(module.gamma), module.beta_reparam(module.beta)
        return _Normalisation.apply(x, gamma, beta, module.inverse)

    return forward


@contextlib.contextmanager
def frozen_layers(*models: nn.Module) -> Iterator[None]:
    """``with frozen_layers(codec): loss = ...``: the frozen layers in the block keep (almost)
    nothing for backward (see the module docstring); GDNs of ``models`` included."""
    layers = [m for model in models for m in model.modules() if type(m) is GDN and "forward" not in vars(m)]
    for layer in layers:
        layer.forward = _lean_normalisation(layer)  # the instance's forward; hooks still run around it
    try:
        with _LeanLayers():
            yield
    finally:
        for layer in layers:
            del layer.forward
