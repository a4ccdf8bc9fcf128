"""Converting the paper's TIC-SFMA checkpoints: numbers of the reference, metadata, bad input."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import icmh_hub.core.adapters
from icmh_hub import IcmhError, UnknownNameError, attach, detach, load_adapters, read_metadata
from icmh_hub.cli import main
from icmh_hub.formats.reference import CONVERTER_VERSION, convert_reference, read_checkpoint, tic_from_state_dict
from icmh_hub.hub.fetch import CONVERTERS, Converter

from .tic_reference import CHECKPOINT, TOLERANCE, VECTORS, needs_reference, reconstruct_like_reference

pytestmark = needs_reference


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "tic_det_q2.safetensors"
    return convert_reference(CHECKPOINT, codec="tic", q=2, task="det", out=out)


@pytest.fixture(scope="module")
def vectors():
    return load_file(str(VECTORS))


@pytest.fixture(scope="module")
def reference_state():
    return read_checkpoint(CHECKPOINT)


def test_one_adapter_reproduces_reference_sfma(converted, vectors):
    adapter = load_adapters(converted).adapters["encoder_1"]  # reference encoder_sfmas.0
    with torch.no_grad():
        out = adapter(vectors["sfma_in"])
    assert (out - vectors["encoder_sfmas_0_out"]).abs().max().item() < TOLERANCE


def test_fft_norm_is_the_references(converted, vectors, monkeypatch):
    """The reference FMA uses norm='backward' (as our FFT_NORM); another norm would not match."""
    assert icmh_hub.core.adapters.FFT_NORM == "backward"
    adapter = load_adapters(converted).adapters["encoder_1"]
    monkeypatch.setattr(icmh_hub.core.adapters, "FFT_NORM", "ortho")
    with torch.no_grad():
        out = adapter(vectors["sfma_in"])
    assert (out - vectors["encoder_sfmas_0_out"]).abs().max().item() > 1e-3


def test_adapted_tic_reproduces_reference_with_sfma(converted, vectors, reference_state):
    """Whole codec with the six converted adapters attached (see tic_reference.py on knife edges)."""
    tic = tic_from_state_dict(reference_state).eval()
    adapted = attach(tic, "tic", {"det": load_adapters(converted)})
    error, ties, flipped = reconstruct_like_reference(adapted.base, vectors["x"], vectors["x_hat_with_sfma"])
    detach(adapted)
    assert error < TOLERANCE, f"max error {error} ({ties} knife-edge latents, {flipped} flipped)"


def test_decoder_numbering_is_reversed(converted, reference_state):
    state = load_adapters(converted).state_dict()
    for ours, theirs in (("decoder_1", "decoder_sfmas.0"), ("decoder_3", "decoder_sfmas.2"), ("encoder_3", "encoder_sfmas.2")):
        down = torch.cat([reference_state[f"{theirs}.{p}.weight"] for p in ("s_down1", "s_down2", "f_down")])
        assert torch.equal(state[f"adapters.{ours}.stages.0.down.weight"], down)
        assert torch.equal(state[f"adapters.{ours}.stages.0.branches.1.mix.bias"], reference_state[f"{theirs}.f_inter.bias"])
        assert torch.equal(state[f"adapters.{ours}.stages.0.branches.0.dw.weight"], reference_state[f"{theirs}.s_dw.weight"])


def test_file_metadata(converted):
    meta = read_metadata(converted)
    assert (meta["codec"], meta["quality"], meta["variant"], meta["middle_dim"]) == ("tic", 2, "sfma", 64)
    info = meta["info"]
    assert info["task"] == "det" and info["source_checkpoint"] == CHECKPOINT.name
    assert info["converter"] == "tic-reference" and info["converter_version"] == CONVERTER_VERSION
    assert len(info["source_sha256"]) == 64
    assert load_adapters(converted).num_parameters() == 287_232
    assert CONVERTERS["tic-reference"]() == Converter(convert_reference, CONVERTER_VERSION)


def test_module_prefixes_and_bare_state_dicts(tmp_path, converted, reference_state):
    prefixed = tmp_path / "dp.pth.tar"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in reference_state.items()}}, prefixed)
    bare = tmp_path / "bare.pth"
    torch.save(dict(reference_state), bare)
    expected = load_adapters(converted).state_dict()
    for source in (prefixed, bare):
        got = load_adapters(convert_reference(source, q=2, task="cls", out=tmp_path / f"{source.stem}.safetensors"))
        assert all(torch.equal(got.state_dict()[k], v) for k, v in expected.items())


class _Thing:
    pass


def _bad_checkpoints(tmp_path, state):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    base_only = tmp_path / "base.pth.tar"
    torch.save({"state_dict": {k: v for k, v in state.items() if "sfmas" not in k}}, base_only)
    partial = tmp_path / "partial.pth.tar"
    torch.save({"state_dict": {k: v for k, v in state.items() if "decoder_sfmas.1.f_inter" not in k}}, partial)
    pickled = tmp_path / "code.pth.tar"
    torch.save({"state_dict": _Thing()}, pickled)
    return {
        text: "weights_only",
        base_only: "no encoder_sfmas",
        partial: "decoder_sfmas.1 lacks",
        pickled: "weights_only",
        tmp_path / "missing.pth.tar": "does not exist",
    }


def test_bad_checkpoints_give_clear_errors(tmp_path, reference_state):
    for path, message in _bad_checkpoints(tmp_path, reference_state).items():
        with pytest.raises(IcmhError, match=message):
            convert_reference(path, q=1, task="cls", out=tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(UnknownNameError):
        convert_reference(CHECKPOINT, q=1, task="depth", out=tmp_path / "out.safetensors")
    with pytest.raises(UnknownNameError):
        convert_reference(CHECKPOINT, codec="mbt2018-mean", q=1, task="cls", out=tmp_path / "out.safetensors")
    with pytest.raises(UnknownNameError):
        convert_reference(CHECKPOINT, q=5, task="cls", out=tmp_path / "out.safetensors")


def test_cli_convert(tmp_path):
    out = tmp_path / "a.safetensors"
    result = CliRunner().invoke(main, ["convert", str(CHECKPOINT), "--q", "4", "--task", "seg", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "287,232" in result.output and read_metadata(out)["quality"] == 4
    bad = tmp_path / "bad.txt"
    bad.write_text("nope")
    result = CliRunner().invoke(main, ["convert", str(bad), "--q", "4", "--task", "seg", "-o", str(tmp_path / "b.safetensors")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error:")
