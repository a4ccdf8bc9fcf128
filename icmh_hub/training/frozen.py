"""Frozen layers that keep (almost) nothing for backward.

When only the adapters train, the frozen codec and the frozen recognition model still pass
gradients back (to the adapters, and through the task model to the reconstruction), but their
weight gradients are never needed. A convolution's or a linear layer's input gradient needs only
its weight, an eval-mode batch norm's only its scale; autograd keeps their inputs anyway, since
one saved set serves every gradient of the op. A GDN's input gradient needs its input, but not
the normalisation autograd also keeps (it is one 1x1 convolution away).

``frozen_layers(codec)`` runs the block's frozen convolutions, linear layers and eval-mode batch
norms (anywhere: a torch function mode) and the frozen GDN layers of ``codec`` (hooks, removed on
exit) through functions that save only that. Same outputs, the same input gradients up to float
rounding, and the inputs are freed as soon as the forward has used them. Layers with trainable
weights (full fine-tuning, the adapters' own) are left alone.
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
        shape_only = grad.new_empty(1).expand(ctx.input_shape)  # the input's values are not needed
        grad_x = torch.ops.aten.convolution_backward(grad, shape_only, weight.to(grad.dtype), None, *ctx.arguments,
                                                     (True, False, False))[0]
        return (grad_x.to(ctx.input_dtype),) + (None,) * 9


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


class _Normalisation(torch.autograd.Function):
    """GDN / inverse GDN, ``y = x * f(n)`` with ``n = conv1x1(x^2, gamma) + beta`` and ``f`` =
    rsqrt (GDN) or sqrt (inverse): takes the output the module computed without autograd, keeps
    ``x`` only and recomputes ``n`` in backward. Gradients in float32 (or float64)."""

    @staticmethod
    def forward(ctx, x, output, gamma, beta, inverse):
        ctx.inverse = inverse
        ctx.save_for_backward(x, gamma, beta)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, gamma, beta = ctx.saved_tensors
        dtype = torch.promote_types(grad.dtype, torch.float32)
        grad, xw = grad.to(dtype), x.to(dtype)
        batch, channels = x.shape[:2]
        gamma = gamma.to(dtype).reshape(channels, channels)
        flat = xw.reshape(batch, channels, -1)
        # the 1x1 convolutions as matrix products (on CPU twice as fast as the convolution kernel)
        f = torch.baddbmm(beta.to(dtype).view(1, -1, 1), gamma.expand(batch, -1, -1), flat * flat)
        inner = grad.reshape(batch, channels, -1) * flat  # d out / d n = x * f'(n)
        if ctx.inverse:  # f = sqrt(n), f' = 1 / (2 f)
            f.sqrt_()
            inner.div_(f).mul_(0.5)
        else:  # f = rsqrt(n), f' = -f^3 / 2
            f.rsqrt_()
            inner.mul_(f.pow(3)).mul_(-0.5)
        grad_x = torch.bmm(gamma.t().expand(batch, -1, -1), inner)  # through n: the 1x1 convolution's adjoint
        del inner
        grad_x.mul_(flat).mul_(2).addcmul_(grad.reshape(batch, channels, -1), f)
        return grad_x.view(x.shape).to(x.dtype), None, None, None, None


def _lean_normalisation(module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that run a frozen GDN without autograd and wrap its output in ``_Normalisation``
    (first among the module's forward hooks, so adapters hooked after it see the wrapped output)."""
    pending: list[tuple[torch.Tensor, bool]] = []

    def before(module, args):
        x = args[0]
        if _frozen(x, module.beta, module.gamma):
            pending.append((x, torch.is_grad_enabled()))
            torch.set_grad_enabled(False)

    def after(module, args, output):
        if not pending:
            return None
        x, grad_enabled = pending.pop()
        torch.set_grad_enabled(grad_enabled)
        if output is None:  # the forward raised
            return None
        with torch.no_grad():
            gamma, beta = module.gamma_reparam(module.gamma), module.beta_reparam(module.beta)
        return _Normalisation.apply(x, output, gamma, beta, module.inverse)

    return [module.register_forward_pre_hook(before), module.register_forward_hook(after, prepend=True, always_call=True)]


@contextlib.contextmanager
def frozen_layers(*models: nn.Module) -> Iterator[None]:
    """``with frozen_layers(codec): loss = ...``: the frozen layers in the block keep (almost)
    nothing for backward (see the module docstring); GDNs of ``models`` included."""
    handles = [h for model in models for m in model.modules() if type(m) is GDN for h in _lean_normalisation(m)]
    try:
        with _LeanLayers():
            yield
    finally:
        for handle in handles:
            handle.remove()
