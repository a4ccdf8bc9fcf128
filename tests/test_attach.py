import time

import pytest
import torch

import icmh_hub
from icmh_hub import AdapterMismatchError, AttachError, UnknownNameError, attach, build_adapters, detach

from .conftest import build_pair, coded, hooks_left, make_image

CODECS = [
    ("bmshj2018-hyperprior", 1),
    ("mbt2018-mean", 3),
    ("mbt2018", 1),
    ("cheng2020-anchor", 1),
    ("cheng2020-attn", 1),
    ("elic2022", 1),
]


def reference_adapters(codec, q, task="cls", seed=2):
    torch.manual_seed(seed)
    return build_adapters(codec, q, init="reference", task=task)


@pytest.mark.parametrize("codec, q", CODECS)
def test_detach_restores_codec_bit_for_bit(codec, q):
    model, untouched = build_pair(codec, q)
    image = make_image(64, 64)
    ref_strings, ref_pixels = coded(untouched, image)

    adapted = attach(model, codec, {"cls": reference_adapters(codec, q)})
    cls_strings, cls_pixels = coded(adapted, image)
    assert cls_strings != ref_strings and not torch.equal(cls_pixels, ref_pixels)

    adapted.set_task(None)
    assert coded(adapted, image)[0] == ref_strings

    base = detach(adapted)
    assert base is model and hooks_left(base) == 0
    strings, pixels = coded(base, image)
    assert strings == ref_strings and torch.equal(pixels, ref_pixels)
    # compared with the untouched twin after the same calls (ELIC's masked convolutions
    # rewrite their own weights on first use, with or without adapters)
    after, expected = base.state_dict(), untouched.state_dict()
    assert after.keys() == expected.keys()
    assert all(torch.equal(after[k], expected[k]) for k in after)


def test_adapters_do_not_enter_the_base_state_dict():
    model, untouched = build_pair("mbt2018-mean", 3)
    adapted = attach(model, "mbt2018-mean", {"cls": reference_adapters("mbt2018-mean", 3)})
    assert model.state_dict().keys() == untouched.state_dict().keys()
    assert any(k.startswith("adapters.cls.") for k in adapted.state_dict())


@pytest.mark.parametrize("codec", ["mbt2018-mean", "cheng2020-anchor"])
@pytest.mark.parametrize("size", [(64, 192), (320, 128), (65, 33), (1, 1), (40, 100)])
def test_adapted_codec_runs_on_every_size_the_base_runs_on(codec, size):
    """Adapters keep shapes, so the adapted codec works exactly where the base codec works."""
    model, untouched = build_pair(codec, 1)
    adapted = attach(model, codec, {"cls": reference_adapters(codec, 1)})
    image = torch.rand(1, 3, *size)
    with torch.no_grad():
        try:
            base_out = untouched(image)
        except RuntimeError:  # the base codec itself cannot take this size (it needs padding)
            with pytest.raises(RuntimeError):
                adapted(image)
            return
        out = adapted(image)
    assert out["x_hat"].shape == base_out["x_hat"].shape
    assert not torch.equal(out["x_hat"], base_out["x_hat"])


def test_many_tasks_switch_instantly_and_human_context_restores():
    model, untouched = build_pair("mbt2018-mean", 1)
    adapted = attach(
        model,
        "mbt2018-mean",
        {"cls": reference_adapters("mbt2018-mean", 1, "cls", 3), "det": reference_adapters("mbt2018-mean", 1, "det", 4)},
    )
    assert adapted.tasks == ["cls", "det"] and adapted.task == "cls"
    image = make_image(64, 64, seed=5)
    with torch.no_grad():
        human = untouched(image)["x_hat"]
        cls = adapted(image)["x_hat"]
        adapted.set_task("det")
        det = adapted(image)["x_hat"]
        with adapted.human():
            assert adapted.task is None
            assert torch.equal(adapted(image)["x_hat"], human)
        assert adapted.task == "det"
    assert not torch.equal(cls, det) and not torch.equal(cls, human)

    start = time.perf_counter()
    for task in ["cls", "det", None] * 100:
        adapted.set_task(task)
    assert (time.perf_counter() - start) / 300 < 5e-3


def test_add_and_remove_adapters_after_attach():
    model, _ = build_pair("mbt2018-mean", 1)
    adapted = attach(model, "mbt2018-mean", quality=1)
    assert adapted.tasks == [] and adapted.task is None
    adapted.add_adapters("seg", build_adapters("mbt2018-mean", 1, stages=[2], sides=["encoder"]))
    adapted.set_task("seg")
    removed = adapted.remove_adapters("seg")
    assert removed.task == "seg" and adapted.task is None and adapted.tasks == []


def test_errors_name_both_sides_of_a_mismatch():
    model, _ = build_pair("mbt2018-mean", 1)
    adapted = attach(model, "mbt2018-mean", quality=1)
    with pytest.raises(AdapterMismatchError, match="cheng2020-anchor.*mbt2018-mean"):
        adapted.add_adapters("cls", build_adapters("cheng2020-anchor", 1))
    with pytest.raises(AdapterMismatchError, match="quality 3.*quality 1"):
        adapted.add_adapters("cls", build_adapters("mbt2018-mean", 3))
    with pytest.raises(UnknownNameError, match="did you mean 'cls'"):
        adapted.add_adapters("cls", build_adapters("mbt2018-mean", 1))
        adapted.set_task("clss")
    with pytest.raises(AttachError, match="already"):
        adapted.add_adapters("cls", build_adapters("mbt2018-mean", 1))
    with pytest.raises(AttachError, match="detach it first"):
        attach(model, "mbt2018-mean", quality=1)
    base = detach(adapted)
    with pytest.raises(AttachError, match="detached"):
        adapted.set_task("cls")
    attach(base, "mbt2018-mean", quality=1)  # a detached codec can be adapted again


def test_failed_attach_leaves_no_hooks():
    model, _ = build_pair("mbt2018-mean", 1)
    good = build_adapters("mbt2018-mean", 1)
    with pytest.raises(AdapterMismatchError):
        attach(model, "mbt2018-mean", {"cls": good, "det": build_adapters("mbt2018-mean", 2)}, quality=1)
    assert hooks_left(model) == 0
    attach(model, "mbt2018-mean", {"cls": good})


def test_load_without_pretrained_weights_works_offline():
    codec = icmh_hub.load("mbt2018-mean", task=["cls", "det"], q=2, pretrained=False)
    assert codec.tasks == ["cls", "det"] and codec.task == "cls"
    strings, pixels = coded(codec, make_image(64, 128))
    assert pixels.shape == (1, 3, 64, 128)
    with pytest.raises(UnknownNameError, match="did you mean 'mbt2018-mean'"):
        icmh_hub.load("mbt2018-men", task="cls", q=2, pretrained=False)
