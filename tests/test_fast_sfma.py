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
from icmh_hub.core.adapters import VARIANTS, Adapter

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


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("height, width", [(5, 6), (4, 7)])
def test_hand_written_backward_passes_gradcheck(variant, height, width):
    """The adapters' backward is written by hand (recomputing what it needs from the input):
    checked against finite differences in float64, input and every parameter, even and odd widths."""
    adapter = Adapter(6, 3, variant, init="reference").double()
    x = torch.randn(2, 6, height, width, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(adapter, (x,), eps=1e-6, atol=1e-6, fast_mode=True)
    for name, parameter in adapter.named_parameters():  # each parameter's gradient against finite differences
        def of_parameter(value, name=name):
            return torch.func.functional_call(adapter, {name: value}, (x.detach(),), strict=False)

        assert torch.autograd.gradcheck(of_parameter, (parameter.detach().clone().requires_grad_(),), eps=1e-6, atol=1e-6, fast_mode=True), name


def test_frozen_adapter_passes_gradients_to_its_input_only():
    adapter = Adapter(8, 4, "sfma", init="reference").requires_grad_(False)
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    adapter(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in adapter.parameters())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_keeps_the_input_only(variant):
    """Memory: an adapter under autograd saves its input (one per stage) and nothing else; the
    rest is recomputed in its backward."""
    adapter = Adapter(16, 8, variant, init="reference")
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        adapter(x)
    assert len(saved) == len(adapter.stages) and saved[0] is x
    assert all(t.shape == x.shape for t in saved)


def test_zero_spectrum_gives_finite_gradients():
    """A constant feature map has an all-zero spectrum outside DC: no NaN may reach the weights."""
    adapter = Adapter(8, 4, "fma", init="reference")
    x = torch.ones(1, 8, 6, 6, requires_grad=True)
    adapter(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in adapter.parameters())
    assert torch.isfinite(x.grad).all()


def test_batches_processed_in_chunks_give_the_same_numbers(monkeypatch):
    """Large batches go through an adapter a few images at a time (memory): same outputs and gradients."""
    from icmh_hub.core import adapters

    adapter = Adapter(12, 6, "sfma", init="reference")
    x, upstream = torch.randn(5, 12, 7, 9), torch.randn(5, 12, 7, 9)
    with torch.no_grad():
        whole = adapter(x)
    out, gx = _grads(adapter, x, upstream)
    grads = [p.grad.clone() for p in adapter.parameters()]
    monkeypatch.setattr(adapters, "CHUNK_ELEMENTS", 2 * 12 * 7 * 9)  # two images per chunk: 2 + 2 + 1
    assert len(adapters.batch_chunks(x)) == 3
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), whole, **TOL)
    out_chunked, gx_chunked = _grads(adapter, x, upstream)
    torch.testing.assert_close(out_chunked, out, **TOL)
    torch.testing.assert_close(gx_chunked, gx, **TOL)
    for grad, p in zip(grads, adapter.parameters()):
        torch.testing.assert_close(p.grad, grad, **TOL)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hand_written_backward_equals_autograd_path(variant):
    """Branches opt into the hand-written backward; without it (``manual_backward = False``, as a
    branch lacking ``hidden_grads`` gets) the adapter trains with autograd: same numbers."""
    manual = Adapter(16, 8, variant, init="reference")
    plain = Adapter(16, 8, variant, init="reference")
    plain.load_state_dict(manual.state_dict())
    for stage in plain.stages:
        stage.manual_backward = False
    x, upstream = torch.randn(2, 16, 9, 12), torch.randn(2, 16, 9, 12)
    out_manual, gx_manual = _grads(manual, x, upstream)
    out_plain, gx_plain = _grads(plain, x, upstream)
    torch.testing.assert_close(out_manual, out_plain, **TOL)
    torch.testing.assert_close(gx_manual, gx_plain, **TOL)
    for (name, a), b in zip(manual.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, **TOL, msg=name)


def test_a_branch_without_a_hand_written_backward_trains_with_autograd():
    from icmh_hub.core.adapters import BRANCHES, ParallelAdapter

    class Scaled(torch.nn.Module):  # a new branch: forward maths only
        in_width_factor = 1

        def __init__(self, channels: int, middle_dim: int) -> None:
            super().__init__()
            self.up = torch.nn.Conv2d(middle_dim, channels, 1)

        def hidden(self, projected: torch.Tensor) -> torch.Tensor:
            return torch.tanh(projected)

    BRANCHES["scaled"] = Scaled
    try:
        adapter = ParallelAdapter(8, 4, ("scaled",))
        x = torch.randn(1, 8, 5, 5, requires_grad=True)
        adapter(x).square().sum().backward()
        expected = x + adapter.branches[0].up(torch.tanh(adapter.down(x)))
        with torch.no_grad():
            torch.testing.assert_close(adapter(x), expected, **TOL)
        assert x.grad is not None and all(p.grad is not None for p in adapter.parameters())
    finally:
        del BRANCHES["scaled"]
