"""TIC: layout and numbers of the reference, any image size, real bitstreams, detach bit-exact."""

from __future__ import annotations

import copy
import json
from importlib.resources import files

import pytest
import torch
from safetensors.torch import load_file

from icmh_hub import IcmhError, attach, build_adapters, build_base, detach, get_codec
from icmh_hub.core.adapters import count_parameters
from icmh_hub.codecs.tic_model import TIC
from icmh_hub.formats.reference import codec_state, read_checkpoint, tic_from_state_dict

from .conftest import coded, hooks_left, make_image
from .tic_reference import CHECKPOINT, TOLERANCE, TSV, VECTORS, needs_reference


@pytest.fixture(scope="module")
def reference_state():
    return read_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module")
def tic(reference_state):
    """TIC with the reference checkpoint's (random) weights; its latents span many bins."""
    model = tic_from_state_dict(reference_state).eval()
    model.update(force=True)
    return model


def test_parameter_count_is_the_papers():
    assert count_parameters(TIC()) == 7_510_723
    assert build_adapters("tic", 1).num_parameters() == 287_232


@needs_reference
def test_state_dict_layout_equals_reference():
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines() if line.strip()]
    reference = [(key, shape) for key, shape, _ in rows if not key.startswith(("encoder_sfmas", "decoder_sfmas"))]
    ours = [(key, str(tuple(t.shape))) for key, t in TIC().state_dict().items()]
    assert [k for k, _ in ours] == [k for k, _ in reference]
    assert ours == reference


@needs_reference
def test_reproduces_reference_without_sfma(tic):
    vectors = load_file(str(VECTORS))
    with torch.no_grad():
        x_hat = tic(vectors["x"])["x_hat"]
    assert x_hat.shape == vectors["x_hat_without_sfma"].shape
    assert (x_hat - vectors["x_hat_without_sfma"]).abs().max().item() < TOLERANCE


@needs_reference
@pytest.mark.parametrize("size", [(1, 1), (65, 33)])
def test_any_size_forward(tic, size):
    image = make_image(*size)
    with torch.no_grad():
        out = tic(image)
    assert out["x_hat"].shape == image.shape
    assert torch.isfinite(out["x_hat"]).all()


@needs_reference
def test_round_trip_not_multiple_of_64_matches_forward(tic):
    image = make_image(40, 100, seed=3)
    with torch.no_grad():
        out = tic.compress(image)
        x_hat = tic.decompress(out["strings"], out["shape"], image_size=out["image_size"])["x_hat"]
        expected = tic(image)["x_hat"].clamp(0, 1)
    assert x_hat.shape == image.shape
    assert (x_hat - expected).abs().max().item() < TOLERANCE
    uncropped = tic.decompress(out["strings"], out["shape"])["x_hat"]
    assert uncropped.shape[-2:] == (64, 128)


def _capture(module, pre: bool = False):
    store = []
    if pre:
        handle = module.register_forward_pre_hook(lambda m, args: store.append(args[0].detach().clone()))
    else:
        handle = module.register_forward_hook(lambda m, args, out: store.append(out.detach().clone()))
    return store, handle


@needs_reference
def test_round_trip_256x384_is_lossless_on_the_latents(tic):
    """The decoder gets exactly the quantised latents the encoder meant (256x384, one pass each)."""
    image = make_image(256, 384, seed=4)
    ys, h1 = _capture(tic.g_a7)
    params, h2 = _capture(tic.h_s3)
    decoded, h3 = _capture(tic.g_s0, pre=True)
    try:
        with torch.no_grad():
            out = tic.compress(image)
            x_hat = tic.decompress(out["strings"], out["shape"], image_size=out["image_size"])["x_hat"]
    finally:
        for handle in (h1, h2, h3):
            handle.remove()
    y, means = ys[0], params[0].chunk(2, 1)[1]
    expected = torch.round(y - means) + means
    assert x_hat.shape == image.shape and 0 <= x_hat.min() and x_hat.max() <= 1
    assert torch.count_nonzero(torch.round(y - means)) > 0.2 * y.numel()  # a real test: many bins
    assert (decoded[-1] - expected).abs().max().item() < 1e-5


@pytest.mark.slow
@needs_reference
def test_round_trip_256x384_matches_forward(tic):
    image = make_image(256, 384, seed=5)
    with torch.no_grad():
        out = tic.compress(image)
        x_hat = tic.decompress(out["strings"], out["shape"], image_size=out["image_size"])["x_hat"]
        expected = tic(image)["x_hat"].clamp(0, 1)
    assert (x_hat - expected).abs().max().item() < TOLERANCE


@needs_reference
def test_detach_is_bit_exact(tic):
    base, twin = copy.deepcopy(tic), tic
    image = make_image(64, 96, seed=6)
    adapters = build_adapters("tic", 2, init="reference", task="det")
    adapted = attach(base, "tic", {"det": adapters}, quality=2)
    with torch.no_grad():
        adapted_strings, _ = coded(adapted, image)
    restored = detach(adapted)
    assert restored is base and hooks_left(restored) == 0
    strings, x_hat = coded(restored, image)
    twin_strings, twin_x_hat = coded(twin, image)
    assert strings == twin_strings and adapted_strings != twin_strings
    assert torch.equal(x_hat, twin_x_hat)
    state, twin_state = restored.state_dict(), twin.state_dict()
    assert list(state) == list(twin_state)
    assert all(torch.equal(state[k], twin_state[k]) for k in state)


def test_spec_points_exist_and_adapters_fit():
    spec = get_codec("tic")
    model = TIC()
    assert spec.qualities == (1, 2, 3, 4) and spec.pad_multiple == 64
    build_adapters("tic", 4).check_fits("tic", 4, model)
    modules = dict(model.named_modules())
    assert [type(modules[p]).__name__ for p in spec.encoder_points] == ["RSTB"] * 3
    assert [type(modules[p]).__name__ for p in spec.decoder_points] == ["ConvTranspose2d"] * 3


def test_index_lists_transtic_base_codecs():
    index = json.loads(files("icmh_hub.index").joinpath("tic_reference.json").read_text())
    bases = {b["q"]: b for b in index["base_codecs"]}
    assert sorted(bases) == [1, 2, 3, 4]
    for q, base in bases.items():
        assert base["codec"] == "tic" and base["source"]["kind"] == "url"
        assert base["source"]["url"] == f"https://github.com/NYCU-MAPL/TransTIC/releases/download/v1.0/base_codec_{q}.pth.tar"


@needs_reference
def test_pretrained_build_goes_through_fetch_url(monkeypatch, reference_state, tmp_path):
    calls = []
    base_file = tmp_path / "base_codec_3.pth.tar"  # TransTIC's layout: the codec alone
    torch.save({"epoch": 1, "state_dict": codec_state(reference_state)}, base_file)

    def fake_fetch_url(url, sha256=None, name=None, **_):
        calls.append((url, sha256, name))
        return base_file

    monkeypatch.setattr("icmh_hub.hub.transport.fetch_url", fake_fetch_url)
    model = build_base("tic", 3)
    assert calls == [("https://github.com/NYCU-MAPL/TransTIC/releases/download/v1.0/base_codec_3.pth.tar", None, None)]
    state = model.state_dict()
    expected = codec_state(reference_state)
    assert all(torch.equal(state[k], v) for k, v in expected.items() if not k.startswith(("entropy_bottleneck._", "gaussian_conditional.")))
    assert not model.training and model.entropy_bottleneck._quantized_cdf.numel() > 0  # ready to compress


def test_other_layouts_are_refused(tmp_path):
    from compressai.zoo import mbt2018_mean

    with pytest.raises(IcmhError, match="not a TIC"):
        tic_from_state_dict(mbt2018_mean(quality=1).state_dict())
    path = tmp_path / "opt.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"lr": 0.1}}, path)
    with pytest.raises(IcmhError, match="no state_dict of tensors"):
        read_checkpoint(path)
