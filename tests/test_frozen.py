"""frozen_layers(): frozen convolutions, linear layers, eval batch norms and GDNs keep (almost)
nothing for backward, and compute the same outputs and input gradients as autograd's own."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from icmh_hub._compressai import compressai  # noqa: F401
from compressai.layers import GDN

from icmh_hub.training.forward import SampleNoise, training_forward
from icmh_hub.training.frozen import frozen_layers

from .conftest import build_pair, hooks_left, make_image

TOL = dict(rtol=1e-5, atol=1e-6)


def _saved(function):
    """(output, the storages autograd saved for backward) of ``function()``."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = function()
    return out, list(saved.values())


def _gdn(inverse: bool) -> nn.Module:
    layer = GDN(6, inverse=inverse)
    with torch.no_grad():
        layer.gamma.add_(0.05 * torch.rand_like(layer.gamma))
        layer.beta.add_(torch.rand_like(layer.beta))
    return layer


LAYERS = {
    "conv": lambda: nn.Conv2d(6, 5, 5, stride=2, padding=2),
    "deconv": lambda: nn.ConvTranspose2d(6, 5, 5, stride=2, padding=2, output_padding=1),
    "conv1x1-no-bias": lambda: nn.Conv2d(6, 5, 1, bias=False),
    "linear": lambda: nn.Linear(9, 4),
    "batch-norm-eval": lambda: nn.BatchNorm2d(6).eval(),
    "gdn": lambda: _gdn(False),
    "inverse-gdn": lambda: _gdn(True),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_frozen_layer_gives_autograds_numbers_and_keeps_no_input(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().requires_grad_(False)
    if name == "batch-norm-eval":
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 6, 7, 9, requires_grad=True)
    plain_out, plain_saved = _saved(lambda: layer(x))
    upstream = torch.randn_like(plain_out)
    (plain_grad,) = torch.autograd.grad(plain_out, x, upstream)
    with frozen_layers(layer):
        lean_out, lean_saved = _saved(lambda: layer(x))
    (lean_grad,) = torch.autograd.grad(lean_out, x, upstream)
    torch.testing.assert_close(lean_out, plain_out, rtol=0, atol=0)  # the very same forward
    torch.testing.assert_close(lean_grad, plain_grad, **TOL)
    weights = {t.untyped_storage().data_ptr() for t in [*layer.parameters(), *layer.buffers()]}

    def activations(saved):
        return [t for t in saved if t.untyped_storage().data_ptr() not in weights and t.numel() >= x.numel() // 2]

    kept = activations(lean_saved)
    if "gdn" in name:
        assert len(kept) == 1 and kept[0] is x  # its input only (autograd also keeps the normalisation)
        assert len(activations(plain_saved)) >= 2
    else:
        assert kept == []
    assert hooks_left(layer) == 0


CONVOLUTIONS = {  # (layer, input shape): every stride, padding, dilation and group count the adjoint must undo
    "conv1d-strided": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 10)),
    "conv2d-dilated-grouped": (lambda: nn.Conv2d(6, 4, 3, stride=3, padding=2, dilation=2, groups=2), (2, 6, 11, 8)),
    "conv2d-depthwise": (lambda: nn.Conv2d(6, 6, 5, padding=2, groups=6), (1, 6, 7, 9)),
    "deconv2d-grouped": (lambda: nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 6, 5, 4)),
    "conv3d": (lambda: nn.Conv3d(3, 2, 3, stride=(1, 2, 2), padding=1), (1, 3, 4, 5, 6)),
    "deconv3d": (lambda: nn.ConvTranspose3d(3, 2, 3, stride=2, padding=1), (1, 3, 3, 4, 3)),
}


@pytest.mark.parametrize("name", list(CONVOLUTIONS))
def test_frozen_convolution_input_gradient_is_the_adjoint(name):
    """The input gradient of a frozen convolution is the adjoint convolution (no input kept),
    for strides that drop rows, dilations, groups, and 1-d / 3-d layers."""
    torch.manual_seed(1)
    build, shape = CONVOLUTIONS[name]
    layer = build().requires_grad_(False)
    x = torch.randn(*shape, requires_grad=True)
    plain = layer(x)
    upstream = torch.randn_like(plain)
    (plain_grad,) = torch.autograd.grad(plain, x, upstream)
    with frozen_layers(layer):
        lean, saved = _saved(lambda: layer(x))
    (lean_grad,) = torch.autograd.grad(lean, x, upstream)
    torch.testing.assert_close(lean, plain, rtol=0, atol=0)
    torch.testing.assert_close(lean_grad, plain_grad, **TOL)
    assert not any(t.shape == x.shape for t in saved)


@pytest.mark.parametrize("inverse", [False, True])
def test_frozen_gdn_under_autocast_computes_what_compressai_does(inverse):
    """Under bf16 autocast the lean GDN gives CompressAI's output (same dtype, same numbers);
    its gradient is computed in float32, so it is as close as bf16 allows."""
    layer = _gdn(inverse).requires_grad_(False)
    x = torch.randn(3, 6, 5, 7, requires_grad=True)
    upstream = None
    results = []
    for lean in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16), frozen_layers(layer) if lean else contextlib.nullcontext():
            features = torch.nn.functional.conv2d(x, torch.eye(6).view(6, 6, 1, 1))  # a bf16 input, as a convolution's
            out = layer(features)
        upstream = torch.randn_like(out) if upstream is None else upstream
        results.append((out, torch.autograd.grad(out, x, upstream)[0]))
    (plain, plain_grad), (lean, lean_grad) = results
    assert lean.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(lean, plain, rtol=0, atol=0)
    torch.testing.assert_close(lean_grad / plain_grad.abs().max(), plain_grad / plain_grad.abs().max(), rtol=0, atol=2e-2)


def test_trainable_layers_are_left_to_autograd():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    with frozen_layers():
        out, saved = _saved(lambda: conv(x))
    out.sum().backward()
    assert conv.weight.grad is not None and any(t is x for t in saved)


def test_adapter_gradients_through_a_frozen_codec_are_unchanged():
    """The whole training forward (mbt2018-mean with adapters): the same loss and adapter
    gradients with frozen_layers as without, and no hooks left on the codec afterwards."""
    from icmh_hub import attach, build_adapters

    base, _ = build_pair("mbt2018-mean", 1)
    base.requires_grad_(False)
    torch.manual_seed(3)
    adapters = build_adapters("mbt2018-mean", 1, middle_dim=8, init="reference", task="cls")
    codec = attach(base, "mbt2018-mean", {"cls": adapters}, quality=1)
    x = torch.cat([make_image(64, 64, seed=s) for s in range(2)])
    results = []
    for lean in (False, True):
        adapters.zero_grad(set_to_none=True)
        with frozen_layers(codec.base) if lean else torch.enable_grad():
            out = training_forward(codec.base, x, SampleNoise(0, 0, range(2)))
            loss = sum(-v.log2().mean() for v in out["likelihoods"].values()) + 100 * (out["x_hat"] - x).square().mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in adapters.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-6, atol=0)
    for lean_grad, plain_grad in zip(results[1][1], results[0][1]):  # float32 through the whole codec:
        scale = plain_grad.abs().max().clamp_min(1e-12)  # 1e-5 of each tensor's largest gradient
        torch.testing.assert_close(lean_grad / scale, plain_grad / scale, rtol=0, atol=1e-5)
    assert hooks_left(codec.base) == len(adapters.points)  # the adapters' own hooks only
