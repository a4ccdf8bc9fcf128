import pytest
import torch

from icmh_hub import VARIANTS, Adapter, IcmhError, build_adapters, count_parameters


@pytest.mark.parametrize(
    "channels, expected", [(128, 47_872), (192, 68_480)]
)
def test_sfma_parameter_count_matches_paper_layout(channels, expected):
    assert count_parameters(Adapter(channels, 64, "sfma")) == expected


@pytest.mark.parametrize(
    "codec, q, kwargs, expected",
    [
        ("mbt2018-mean", 3, {}, 287_232),  # paper: 0.28M
        ("cheng2020-anchor", 5, {}, 410_880),  # paper: 0.41M
        ("mbt2018-mean", 3, {"middle_dim": 1}, 5_622),  # paper: 0.005M
        ("mbt2018-mean", 3, {"middle_dim": 32}, 138_240),  # paper: 0.14M
        ("mbt2018-mean", 3, {"middle_dim": 128}, 622_080),  # paper: 0.62M
        ("mbt2018-mean", 3, {"variant": "sma"}, 158_976),  # paper: 0.16M
        ("mbt2018-mean", 3, {"variant": "fma"}, 128_256),  # paper: 0.12M
        ("mbt2018-mean", 3, {"variant": "sma+sma"}, 317_952),  # paper: 0.32M
        ("mbt2018-mean", 3, {"stages": [1]}, 95_744),  # paper: 0.09M, one stage enc+dec
        ("mbt2018-mean", 3, {"sides": ["encoder"]}, 143_616),  # paper: 0.14M
        ("mbt2018-mean", 3, {"sides": ["decoder"]}, 143_616),
        ("mbt2018-mean", 6, {}, 410_880),  # q5-8 of mbt2018-mean have N=192
    ],
)
def test_adapter_set_parameter_counts(codec, q, kwargs, expected):
    assert build_adapters(codec, q, **kwargs).num_parameters() == expected


def test_sequential_variants_hold_both_branches():
    both = count_parameters(Adapter(128, 64, "sma")) + count_parameters(Adapter(128, 64, "fma"))
    assert count_parameters(Adapter(128, 64, "sma->fma")) == both
    assert count_parameters(Adapter(128, 64, "fma->sma")) == both
    assert count_parameters(Adapter(128, 64, "naive")) == 128 * 64 + 64 + 64 * 128 + 128


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 9)])
def test_identity_init_returns_input_exactly(variant, size):
    adapter = Adapter(16, 8, variant, init="identity")
    x = torch.randn(2, 16, *size)
    assert torch.equal(adapter(x), x)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_init_changes_features_and_trains(variant):
    adapter = Adapter(16, 8, variant, init="reference")
    x = torch.randn(2, 16, 11, 6)
    out = adapter(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


def test_identity_init_gets_gradients_on_last_convolutions():
    adapter = Adapter(16, 8, "sfma", init="identity")
    adapter(torch.randn(1, 16, 8, 8)).square().mean().backward()
    ups = [p for n, p in adapter.named_parameters() if ".up." in n]
    assert ups and all(p.grad.abs().sum() > 0 for p in ups)


def test_frequency_branch_scales_amplitude_and_keeps_phase():
    """The FMA filter equals rebuilding the spectrum from a scaled amplitude and the same angle."""
    adapter = Adapter(8, 4, "fma", init="reference")
    branch = adapter.stages[0].branches[0]
    z = torch.randn(1, 4, 10, 7)
    spectrum = torch.fft.rfft2(z)
    gain = torch.sigmoid(branch.mix(torch.relu(branch.dw(spectrum.abs()))))
    amplitude, angle = spectrum.abs() * gain, spectrum.angle()
    rebuilt = torch.complex(amplitude * torch.cos(angle), amplitude * torch.sin(angle))
    expected = branch.up(torch.relu(torch.fft.irfft2(rebuilt, s=(10, 7))))
    assert torch.allclose(branch(z), expected, atol=1e-5)


def test_unknown_variant_suggests_close_names():
    with pytest.raises(IcmhError, match="did you mean 'sfma'"):
        Adapter(16, 8, "sfmaa")


@pytest.mark.parametrize("bad", [{"stages": [4]}, {"stages": []}, {"sides": ["middle"]}, {"q": 99}])
def test_bad_build_arguments_are_clear(bad):
    kwargs = {"q": 3} | bad
    with pytest.raises(IcmhError):
        build_adapters("mbt2018-mean", **kwargs)
