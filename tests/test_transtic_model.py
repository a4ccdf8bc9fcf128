"""TransTIC's prompts on our TIC: the reference's numbers, its checkpoint layout, any image size."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from safetensors.torch import load_file

from icmh_hub.codecs.tic_model import TIC, set_shift_masks, shift_mask
from icmh_hub.core.adapters import count_parameters
from icmh_hub.errors import CheckpointError, InvalidArgumentError, UnknownNameError
from icmh_hub.formats.reference import check_embedded_base, codec_state, read_checkpoint, tic_from_state_dict
from icmh_hub.methods.transtic_model import (
    DECODER_STAGES,
    ENCODER_STAGES,
    TransticPrompts,
    prompts_from_reference,
    prompts_to_reference,
)

from .conftest import make_image
from .tic_reference import (
    TOLERANCE,
    TRANSTIC_CHECKPOINT,
    TRANSTIC_TSV,
    TRANSTIC_VECTORS,
    needs_transtic,
    reconstruct_like_reference,
)


@pytest.fixture(scope="module")
def state():
    """The reference TransTIC state_dict, ``module.`` removed (base codec and prompts)."""
    return read_checkpoint(TRANSTIC_CHECKPOINT)


@pytest.fixture(scope="module")
def base(state):
    return {k: v for k, v in state.items() if "prompt" not in k}


@pytest.fixture(scope="module")
def tic(base):
    """Our TIC with the base weights, shifted windows masked as TransTIC's code runs them."""
    return set_shift_masks(tic_from_state_dict(base, "TransTIC base")).eval()


@pytest.fixture(scope="module")
def prompts(state):
    model = TransticPrompts()
    model.load_state_dict(prompts_from_reference(state))
    return model.eval()


@pytest.fixture(scope="module")
def vectors():
    return load_file(str(TRANSTIC_VECTORS))


@contextlib.contextmanager
def prompted(tic: TIC, prompts: TransticPrompts):
    """``tic`` whose ``g_a`` and ``g_s`` run the prompted stages (TIC.forward, compress and the
    reference helpers call them), restored on exit."""

    def g_a(x):
        context = prompts.encoder_context(x)
        for i in range(8):
            name = f"g_a{i}"
            stage = getattr(tic, name)
            x = prompts.encoder_stage(name, stage, x, context) if name in ENCODER_STAGES else stage(x)
        return x

    def g_s(y):
        for i in range(8):
            name = f"g_s{i}"
            stage = getattr(tic, name)
            y = prompts.decoder_stage(name, stage, y) if name in DECODER_STAGES else stage(y)
        return y

    tic.g_a, tic.g_s = g_a, g_s
    try:
        yield tic
    finally:
        del tic.g_a, tic.g_s


def bits(out) -> float:
    """Sum over y and z of -log2(likelihood) (CompressAI bounds likelihoods below at 1e-9, as the reference)."""
    return sum(-torch.log2(l.double()).sum().item() for l in out["likelihoods"].values())


def test_parameter_count():
    assert count_parameters(TransticPrompts()) == 1_619_968


@needs_transtic
def test_layout_equals_reference():
    rows = [line.split("\t") for line in TRANSTIC_TSV.read_text().splitlines() if line.strip()]
    expected = {key: shape for key, shape, _, part in rows if part == "prompt"}
    ours = {k: str(tuple(v.shape)) for k, v in prompts_to_reference(TransticPrompts().state_dict()).items()}
    assert ours == expected


@needs_transtic
def test_reference_keys_round_trip(state, prompts):
    back = prompts_to_reference(prompts.state_dict())
    assert set(back) == {k for k in state if "prompt" in k}
    assert all(torch.equal(back[k], state[k]) for k in back)


@needs_transtic
def test_incomplete_or_wrong_checkpoints_are_refused(state):
    missing = {k: v for k, v in state.items() if k != "g_a2_prompt.bias"}
    with pytest.raises(CheckpointError, match=r"1 keys missing \['g_a2_prompt.bias'\]"):
        prompts_from_reference(missing)
    wrong = {**state, "g_s0.residual_group.prompt_embeddings": torch.zeros(2, 8, 192)}
    with pytest.raises(CheckpointError, match=r"g_s0.residual_group.prompt_embeddings \(2, 8, 192\) != \(2, 16, 192\)"):
        prompts_from_reference(wrong)
    with pytest.raises(CheckpointError, match=r"1 unexpected \['g_a4_prompt.weight'\]"):
        prompts_from_reference({**state, "g_a4_prompt.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="104 keys missing"):
        prompts_from_reference(codec_state(state))


@needs_transtic
def test_reference_masks_are_swin_shift_masks(base):
    masks = {k: v for k, v in base.items() if k.endswith(".attn_mask")}
    assert len(masks) == 16
    for key, mask in masks.items():
        window = int(mask.shape[1] ** 0.5)
        side = int(mask.shape[0] ** 0.5) * window
        assert torch.equal(shift_mask(side, side, window, window // 2), mask), key


@needs_transtic
def test_base_matches_human_vectors(tic, vectors):
    with torch.no_grad():
        out = tic(vectors["x"])
        unmasked = set_shift_masks(copy.deepcopy(tic), False)(vectors["x"])["x_hat"]
    assert (out["x_hat"] - vectors["x_hat_human"]).abs().max().item() < TOLERANCE
    assert bits(out) == pytest.approx(vectors["bits_human"].item(), rel=1e-6)
    # TransTIC's code masks shifted windows, Adapt-ICMH's does not: the mask is needed here
    assert (unmasked - vectors["x_hat_human"]).abs().max().item() > 0.1


@needs_transtic
def test_prompted_matches_machine_vectors(tic, prompts, vectors):
    reference_tic = copy.deepcopy(tic.state_dict())
    with torch.no_grad(), prompted(tic, prompts):
        out = tic(vectors["x"])
        error, ties, flipped = reconstruct_like_reference(tic, vectors["x"], vectors["x_hat_machine"])
    assert error < TOLERANCE, f"{ties} knife-edge latents, {flipped} flipped"
    assert bits(out) == pytest.approx(vectors["bits_machine"].item(), rel=1e-6)
    assert (out["x_hat"] - vectors["x_hat_human"]).abs().max().item() > 0.1  # the prompts act
    assert all(torch.equal(v, reference_tic[k]) for k, v in tic.state_dict().items())  # weights untouched


@needs_transtic
@pytest.mark.parametrize("size", [(65, 33), (320, 192)])
def test_any_size(tic, prompts, size):
    image = make_image(*size, seed=2)
    with torch.no_grad(), prompted(tic, prompts):
        x_hat = tic(image)["x_hat"]
    assert x_hat.shape == image.shape and torch.isfinite(x_hat).all()


def test_stages_pad_partial_windows():
    torch.manual_seed(3)
    tic, prompts = set_shift_masks(TIC()).eval(), TransticPrompts().eval()
    image = torch.rand(1, 3, 72, 40)  # tokens 36 x 20 at g_a1, not whole 8x8 windows
    with torch.no_grad():
        context = prompts.encoder_context(image)
        x = tic.g_a0(image)
        out = prompts.encoder_stage("g_a1", tic.g_a1, x, context)
        decoded = prompts.decoder_stage("g_s6", tic.g_s6, x)
    assert out.shape == decoded.shape == x.shape
    assert torch.isfinite(out).all() and torch.isfinite(decoded).all()


def test_generator_batchnorm_stays_in_eval_mode():
    torch.manual_seed(4)
    prompts = TransticPrompts().train()
    norms = [m for m in prompts.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 12 and prompts.training and not any(m.training for m in norms)
    before = copy.deepcopy(prompts.generator.state_dict())
    torch.nn.Sequential(prompts).train()  # a parent's train() reaches it too
    assert not any(m.training for m in norms)
    image = torch.rand(2, 3, 32, 32)
    prompts.encoder_context(image).square().sum().backward()
    assert all(torch.equal(v, before[k]) for k, v in prompts.generator.state_dict().items())  # statistics kept
    assert norms[0].weight.grad is not None and norms[0].weight.grad.abs().sum() > 0  # affine part trains
    with torch.no_grad():
        assert torch.equal(prompts.encoder_context(image), prompts.eval().encoder_context(image))


def test_gradients_reach_the_prompts_only():
    torch.manual_seed(5)
    tic, prompts = set_shift_masks(TIC()).eval().requires_grad_(False), TransticPrompts().train()
    image = torch.rand(1, 3, 64, 64)
    x = tic.g_a0(image)
    encoded = prompts.encoder_stage("g_a3", tic.g_a3, tic.g_a2(x), prompts.encoder_context(image))
    decoded = prompts.decoder_stage("g_s4", tic.g_s4, encoded)
    decoded.square().mean().backward()
    trained = {"context_down.weight", "encoder.g_a3.3.weight", "decoder.g_s4", "generator.down1.0.weight"}
    grads = {k: p.grad for k, p in prompts.named_parameters() if k in trained}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()) and len(grads) == len(trained)
    assert prompts.encoder["g_a1"][0].weight.grad is None  # g_a1's prompts were not used


def test_wrong_stages_and_inputs_are_refused():
    tic, prompts = TIC(), TransticPrompts()
    x = torch.zeros(1, 128, 16, 16)
    with pytest.raises(UnknownNameError, match="g_a1"):
        prompts.encoder_stage("g_a5", tic.g_a5, x, x)
    with pytest.raises(InvalidArgumentError, match="pass tic.g_a1"):
        prompts.encoder_stage("g_a1", tic.g_a3, x, x)
    with pytest.raises(InvalidArgumentError, match="pass tic.g_s0"):
        prompts.decoder_stage("g_s0", tic.g_s2, x)
    with pytest.raises(InvalidArgumentError, match="half their size"):
        prompts.encoder_stage("g_a1", tic.g_a1, x, torch.zeros(1, 128, 8, 8))
    with pytest.raises(InvalidArgumentError, match="multiples of 4"):
        prompts.encoder_context(torch.zeros(1, 3, 30, 32))


@needs_transtic
def test_released_base_file_layout_loads(tmp_path, state, base):
    """TransTIC's base_codec_q.pth.tar layout: older entropy-bottleneck names and attn_mask
    buffers load into TIC (through the reference reader and TIC.load_state_dict alike)."""
    assert "entropy_bottleneck._matrix0" in base and "entropy_bottleneck.matrices.0" not in base
    quantiles = [base["entropy_bottleneck.quantiles"]]
    path = tmp_path / "base_codec_2.pth.tar"
    torch.save({
        "epoch": 3, "state_dict": base, "loss": 1.0,
        "optimizer": {"state": {}, "param_groups": []},
        "aux_optimizer": torch.optim.Adam(quantiles).state_dict(), "lr_scheduler": {"milestones": {}},
    }, path)
    loaded = tic_from_state_dict(read_checkpoint(path), path.name)
    assert torch.equal(loaded.entropy_bottleneck.matrices[4], base["entropy_bottleneck._matrix4"])
    assert torch.equal(loaded.entropy_bottleneck.factors[0], base["entropy_bottleneck._factor0"])
    direct = TIC()
    direct.load_state_dict(base)
    assert torch.equal(direct.entropy_bottleneck.biases[2], base["entropy_bottleneck._bias2"])
    check_embedded_base(state, path, "tic", 2, TRANSTIC_CHECKPOINT.name)  # its own base: accepted
    changed = {**base, "entropy_bottleneck._bias0": base["entropy_bottleneck._bias0"] + 1}
    torch.save({"state_dict": changed}, path)
    with pytest.raises(CheckpointError, match=r"differs .* in 1 of"):
        check_embedded_base(state, path, "tic", 2, TRANSTIC_CHECKPOINT.name)
