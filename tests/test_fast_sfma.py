"""The fast adapters compute the same numbers as straightforward formulations of the same maths.

``benchmarks/baseline_sfma.py`` is the SFMA written the obvious way (three projections, polar
rebuild of the spectrum, separate ``up`` convolutions); every variant is also checked against a
plain re-computation with the adapter's own ``nn.Conv2d`` modules called as ordinary layers.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from benchmarks.baseline_sfma import BaselineSFMA
from icmh_hub.core.adapters import VARIANTS, Adapter, _DepthwiseConv

TOL = dict(rtol=1e-5, atol=1e-5)
SIZES = [(1, 16, 8, 8, 8), (2, 12, 4, 9, 7), (1, 32, 16, 13, 5), (3, 8, 1, 1, 1), (1, 20, 64, 2, 17)]


def _grads(module: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.backward(upstream)
    return out.detach(), x.grad


@pytest.mark.parametrize("batch, channels, middle, height, width", SIZES)
def test_fast_sfma_equals_straightforward_formulation_forward_and_gradients(batch, channels, middle, height, width):
    fast = Adapter(channels, middle, "sfma", init="reference")
    base = BaselineSFMA.from_adapter(fast)
    x = torch.randn(batch, channels, height, width)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), base(x), **TOL)
    upstream = torch.randn_like(x)
    out_fast, gx_fast = _grads(fast, x, upstream)
    out_base, gx_base = _grads(base, x, upstream)
    torch.testing.assert_close(out_fast, out_base, **TOL)
    torch.testing.assert_close(gx_fast, gx_base, **TOL)
    baseline_grads = {name: p.grad for name, p in base.named_parameters()}
    mapped = BaselineSFMA(channels, middle).load_adapter_state(
        {name: p.grad for name, p in fast.named_parameters()}
    )  # our gradients, laid out as the baseline's parameters
    for name, tensor in mapped.state_dict().items():
        scale = baseline_grads[name].abs().max().clamp_min(1.0)
        torch.testing.assert_close(tensor / scale, baseline_grads[name] / scale, **TOL, msg=name)


def _plain_forward(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """Every variant with the adapter's modules called as ordinary layers, nothing fused."""
    for stage in adapter.stages:
        parts = stage.down(x).split(stage.widths, dim=1)
        out = x
        for name, branch, z in zip(stage.branch_names, stage.branches, parts):
            if name == "spatial":
                a, b = z.chunk(2, dim=1)
                h = F.relu(branch.dw(a) * b)
            elif name == "frequency":
                spectrum = torch.fft.rfft2(z)
                gain = torch.sigmoid(branch.mix(F.relu(branch.dw(spectrum.abs()))))
                h = F.relu(torch.fft.irfft2(spectrum * gain, s=z.shape[-2:]))
            else:
                h = F.relu(z)
            out = out + branch.up(h)
        x = out
    return x


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("batch, height, width", [(1, 7, 5), (2, 6, 11)])
def test_every_variant_equals_plain_layers(variant, batch, height, width):
    adapter = Adapter(12, 6, variant, init="reference")
    x = torch.randn(batch, 12, height, width)
    with torch.no_grad():  # the inference path (in-place shortcuts) ...
        torch.testing.assert_close(adapter(x), _plain_forward(adapter, x), **TOL)
    upstream = torch.randn_like(x)
    out, gx = _grads(adapter, x, upstream)  # ... and the autograd path
    fast_grads = [p.grad.clone() for p in adapter.parameters()]
    x_plain = x.clone().requires_grad_()
    adapter.zero_grad(set_to_none=True)
    plain = _plain_forward(adapter, x_plain)
    plain.backward(upstream)
    torch.testing.assert_close(out, plain.detach(), **TOL)
    torch.testing.assert_close(gx, x_plain.grad, **TOL)
    for fast_grad, p in zip(fast_grads, adapter.parameters()):
        scale = p.grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(fast_grad / scale, p.grad / scale, **TOL)


def test_inference_path_leaves_its_input_alone():
    adapter = Adapter(16, 8, "sfma", init="reference")
    x = torch.randn(1, 16, 9, 10)
    kept = x.clone()
    with torch.inference_mode():
        adapter(x)
    assert torch.equal(x, kept)


@pytest.mark.parametrize("kernel", [3, 5])
def test_depthwise_backward_passes_gradcheck(kernel):
    x = torch.randn(2, 3, 6, 5, dtype=torch.double, requires_grad=True)
    weight = torch.randn(3, 1, kernel, kernel, dtype=torch.double, requires_grad=True)
    bias = torch.randn(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_DepthwiseConv.apply, (x, weight, bias))


def test_zero_spectrum_gives_finite_gradients():
    """A constant feature map has an all-zero spectrum outside DC: no NaN may reach the weights."""
    adapter = Adapter(8, 4, "fma", init="reference")
    x = torch.ones(1, 8, 6, 6, requires_grad=True)
    adapter(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in adapter.parameters())
    assert torch.isfinite(x.grad).all()


def test_checkpointing_keeps_outputs_and_gradients():
    from icmh_hub.core.adapters import set_checkpointing

    adapter = Adapter(12, 6, "sfma", init="reference")
    x, upstream = torch.randn(2, 12, 7, 9), torch.randn(2, 12, 7, 9)
    out, gx = _grads(adapter, x, upstream)
    plain = [p.grad.clone() for p in adapter.parameters()]
    out_ck, gx_ck = _grads(set_checkpointing(adapter), x, upstream)
    assert adapter.stages[0].checkpoint
    torch.testing.assert_close(out_ck, out, **TOL)
    torch.testing.assert_close(gx_ck, gx, **TOL)
    for grad, p in zip(plain, adapter.parameters()):
        torch.testing.assert_close(p.grad, grad, **TOL)
