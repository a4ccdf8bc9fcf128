"""An adapted codec behaves as the CompressAI model it wraps, and as a PEFT model does (issue 27):
attributes fall through, the base is frozen, state_dict = base + adapters, a trainable summary."""

from __future__ import annotations

import pytest
import torch
from compressai.models import CompressionModel, MeanScaleHyperprior

import icmh_hub
from icmh_hub import AttachError, attach, detach

from .conftest import build_pair, make_image


@pytest.fixture
def adapted():
    return icmh_hub.load("mbt2018-mean", task=["cls", "det"], q=1, pretrained=False)


def test_attributes_fall_through_to_the_base_codec(adapted):
    assert isinstance(adapted, CompressionModel)
    assert adapted.g_a is adapted.base.g_a and adapted.entropy_bottleneck is adapted.base.entropy_bottleneck
    assert (adapted.N, adapted.M) == (128, 192)
    assert adapted.aux_loss().item() == adapted.base.aux_loss().item()
    with pytest.raises(AttributeError, match="no_such_part"):
        adapted.no_such_part


def test_the_base_is_frozen_and_detach_gives_its_flags_back():
    model, _ = build_pair("mbt2018-mean", 1)
    model.g_s.requires_grad_(False)  # a user's own choice, to be given back as it was
    flags = [p.requires_grad for p in model.parameters()]
    codec = attach(model, "mbt2018-mean", {"cls": icmh_hub.build_adapters("mbt2018-mean", 1, task="cls")})
    assert not any(p.requires_grad for p in codec.base.parameters())
    assert all(p.requires_grad for p in codec.adapter_sets.parameters())
    trainable, total = codec.trainable_parameters()
    assert trainable == codec.adapter_sets["cls"].num_parameters() == 287_232
    assert total == trainable + sum(p.numel() for p in model.parameters())
    assert [p.requires_grad for p in detach(codec).parameters()] == flags


def test_print_trainable_parameters(adapted, capsys):
    adapted.print_trainable_parameters()
    trainable, total = adapted.trainable_parameters()
    assert capsys.readouterr().out.strip() == f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"


def test_state_dict_is_the_base_codecs_plus_adapters_and_loads_into_a_plain_model(adapted):
    state = adapted.state_dict()
    base_keys = [k for k in state if not k.startswith("adapters.")]
    assert base_keys == list(adapted.base.state_dict())
    assert {k.split(".")[1] for k in state if k.startswith("adapters.")} == {"cls", "det"}

    plain = MeanScaleHyperprior(128, 192)  # a CompressAI model that never saw icmh-hub
    plain.load_state_dict({k: state[k] for k in base_keys})
    plain.update(force=True)
    image = make_image(64, 64)
    with torch.no_grad(), adapted.human():
        ours, theirs = adapted.compress(image), plain.compress(image)
        assert ours["strings"] == theirs["strings"]
        torch.testing.assert_close(adapted.decompress(ours["strings"], ours["shape"])["x_hat"],
                                   plain.decompress(theirs["strings"], theirs["shape"])["x_hat"], rtol=0, atol=0)


def test_state_dict_round_trips_into_another_adapted_codec(adapted):
    other = icmh_hub.load("mbt2018-mean", task=["cls", "det"], q=1, pretrained=False)
    for p in other.adapter_sets.parameters():
        torch.nn.init.zeros_(p)
    other.load_state_dict(adapted.state_dict())
    image = make_image(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(other(image)["x_hat"], adapted(image)["x_hat"], rtol=0, atol=0)
    with pytest.raises(AttachError, match="tasks this codec does not hold"):
        icmh_hub.load("mbt2018-mean", task="cls", q=1, pretrained=False).load_state_dict(adapted.state_dict())
