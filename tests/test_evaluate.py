"""Evaluation: metric code on known answers, the coding step, and whole runs on tiny generated data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icmh_hub import IcmhError, attach, get_codec
from icmh_hub.assemble import build_codec
from icmh_hub.coding import code
from icmh_hub.core.padding import pad
from icmh_hub.core.rate import estimated_bits
from icmh_hub.evaluation import sweep as sweep_module
from icmh_hub.evaluation.bits import bits_per_position
from icmh_hub.evaluation.classification import ClassificationData
from icmh_hub.evaluation.coco import coco_evaluate, detections_to_coco, load_coco
from icmh_hub.evaluation.metrics import ms_ssim, psnr, top1_correct
from icmh_hub.evaluation.protocol import resized_shape
from icmh_hub.evaluation.run import card_results, evaluate
from tests.conftest import build_pair, make_image, spread_latents


# -- tiny data sets the tests write ------------------------------------------------------------
def save_png(tensor: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = (tensor[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_class_folder(root: Path, classes: int = 2, per_class: int = 2, size: int = 64) -> Path:
    for c in range(classes):
        for i in range(per_class):
            save_png(make_image(size, size, seed=10 * c + i), root / f"class{c}" / f"img{i}.png")
    return root


# (width, height) of the images and their objects: (category, x, y, w, h)
COCO_IMAGES = {1: ((120, 96), [(1, 10, 12, 40, 30), (3, 60, 40, 50, 44)]), 2: ((100, 140), [(1, 20, 30, 50, 70)])}


def make_coco(root: Path) -> Path:
    """Images with coloured rectangles and a COCO json with their boxes and polygon masks."""
    images, annotations = [], []
    for image_id, ((width, height), objects) in COCO_IMAGES.items():
        picture = make_image(height, width, seed=image_id) * 0.3
        for k, (category, x, y, w, h) in enumerate(objects):
            picture[0, k % 3, y : y + h, x : x + w] = 0.9
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0,
                "bbox": [x, y, w, h], "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
        save_png(picture, root / "images" / f"{image_id:06d}.png")
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "width": width, "height": height})
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    path = root / "instances_tiny.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


# -- metric code, known answers ----------------------------------------------------------------
def test_top1_from_known_logits():
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 3.0, 2.0]])
    assert top1_correct(logits, torch.tensor([1, 0, 0, 2])) == 2


def test_psnr_and_ms_ssim_known_values():
    x = torch.full((1, 3, 32, 32), 0.5)
    assert psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-4)  # mse 0.01 -> 20 dB
    assert psnr(x, x) == math.inf
    assert ms_ssim(x, x) is None  # too small for 5 scales: not made up
    big = make_image(176, 176)
    assert ms_ssim(big, big) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(big, (big + 0.2 * torch.rand_like(big)).clamp(0, 1)) < 0.99


def test_resized_shape_follows_the_coco_rule():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)
    assert resized_shape(100, 1000, 800, 1333) == (133, 1333)  # long side capped
    assert resized_shape(96, 120, 96, 160) == (96, 120)


def test_evaluation_pads_as_compress_does():
    """One padding policy: the edge pixels repeated, the bits evaluation counts are the file's."""
    x = torch.rand(1, 3, 70, 130)
    padded = pad(x, 64)
    assert padded.shape[-2:] == (128, 192)
    assert torch.equal(padded[..., :70, :130], x)
    assert torch.equal(padded[..., 70:, :130], x[..., 69:70, :].expand(-1, -1, 58, -1))


# -- coding ------------------------------------------------------------------------------------
def test_code_image_crops_back_and_rates_agree():
    torch.manual_seed(1)
    model = get_codec("mbt2018-mean").build(1)
    spread_latents(model, gain=3.0)  # latents over several bins, inside the CDF tables' range
    model.update(force=True)
    codec = attach(model, "mbt2018-mean", {}, quality=1)
    x = make_image(70, 90)
    coded = code(codec, x)
    assert coded.x_hat.shape == x.shape
    # the estimate and the real bitstream agree within a few percent once the CDFs are updated; the
    # coder codes each latent with the next scale of its table (up to 13% larger), which random
    # weights' badly calibrated scales feel: -6% here with edge padding (+0.8% with zero padding)
    assert coded.bpp == pytest.approx(coded.bpp_est, rel=0.1)
    with torch.no_grad():
        expected = float(estimated_bits(model(pad(x, 64))["likelihoods"]).sum()) / (70 * 90)
        strings = model.compress(pad(x, 64))["strings"]
    assert coded.bpp_est == pytest.approx(expected)
    assert coded.strings == strings and coded.bits == [8 * sum(len(s[0]) for s in strings)]  # the bytes compress writes
    fast = code(codec, x, bitstream=False)
    assert fast.bits is None and fast.bpp_est == pytest.approx(coded.bpp_est)


def test_bits_per_position_adds_up_to_the_rate_of_y():
    model, _ = build_pair("mbt2018-mean", 1)
    x = make_image(64, 128)
    bits = bits_per_position(attach(model, "mbt2018-mean", {}, quality=1), x)
    assert bits.shape == (4, 8)
    with torch.no_grad():
        y_bits = -torch.log2(model(x)["likelihoods"]["y"]).sum()
    assert float(bits.sum()) == pytest.approx(float(y_bits), rel=1e-5)


# -- COCO --------------------------------------------------------------------------------------
def _perfect_outputs(coco, image_id: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Detector-style outputs equal to the ground truth (in a frame ``scale`` times larger)."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns])
    masks = torch.stack([torch.from_numpy(coco.annToMask(a)).float() for a in anns])[:, None]
    if scale != 1.0:
        masks = torch.nn.functional.interpolate(masks, scale_factor=scale, mode="nearest")
    return {
        "boxes": boxes.float() * scale,
        "scores": torch.ones(len(anns)),
        "labels": torch.tensor([a["category_id"] for a in anns]),
        "masks": masks,
    }


def test_coco_ap_is_100_for_perfect_detections(tmp_path):
    coco = load_coco(make_coco(tmp_path))
    ids = sorted(coco.getImgIds())
    detections = []
    for image_id in ids:
        info = coco.loadImgs(image_id)[0]
        hw = (info["height"], info["width"])
        detections += detections_to_coco(_perfect_outputs(coco, image_id), image_id, hw, hw)
    for iou_type in ("bbox", "segm"):
        assert coco_evaluate(coco, detections, iou_type, ids) == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    # a wrong class everywhere: AP drops to 0
    wrong = [dict(d, category_id=4 - d["category_id"]) for d in detections]
    assert coco_evaluate(coco, wrong, "bbox", ids)["AP50"] == 0.0
    assert coco_evaluate(coco, [], "bbox", ids) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_detections_are_mapped_back_to_the_original_image(tmp_path):
    coco = load_coco(make_coco(tmp_path))
    info = coco.loadImgs(1)[0]
    hw = (info["height"], info["width"])
    detections = detections_to_coco(_perfect_outputs(coco, 1, scale=2.0), 1, hw, (2 * hw[0], 2 * hw[1]))
    assert detections[0]["bbox"] == pytest.approx(coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]["bbox"])
    assert coco_evaluate(coco, detections, "segm", [1])["AP50"] == pytest.approx(100.0)
    json.dumps(detections)  # JSON-ready (RLE counts as str)


def test_coco_errors(tmp_path):
    with pytest.raises(IcmhError, match="do not exist"):
        load_coco(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(IcmhError, match="cannot read"):
        load_coco(tmp_path / "bad.json")
    coco = load_coco(make_coco(tmp_path))
    with pytest.raises(IcmhError, match="no \\(non-crowd\\) annotations"):
        coco_evaluate(coco, [], "bbox", [999])


# -- whole runs (random codec and task models) -------------------------------------------------
@pytest.fixture(scope="module")
def random_codec():
    codec = build_codec("mbt2018-mean", 1, "cls", pretrained=False)
    spread_latents(codec.base, gain=3.0)  # so that the rate depends on the image and the adapters
    codec.update(force=True)
    return codec


def test_classification_run(tmp_path, random_codec):
    from icmh_hub.core.recognition import build_classifier

    data = make_class_folder(tmp_path / "cls")
    classifier = build_classifier(None)
    adapted = evaluate(random_codec, "cls", data, classifier, size=64, progress=False)
    human = evaluate(random_codec, "cls", data, classifier, human=True, size=64, progress=False)
    assert adapted["images"] == 4 and adapted["mode"] == "adapted" and human["mode"] == "human"
    assert adapted["dataset"] == "cls" and adapted["protocol"] == "64"  # resize and crop 64
    for result in (adapted, human):
        metrics = result["metrics"]
        assert 0.0 <= metrics["top1"] <= 100.0 and metrics["top1"] % 25 == 0  # 4 images
        assert metrics["bpp_est"] > 0 and metrics["bpp_actual"] > 0 and math.isfinite(metrics["psnr"])
        assert metrics["ms_ssim"] is None  # 64x64 is too small for MS-SSIM
    assert adapted["metrics"]["bpp_est"] != human["metrics"]["bpp_est"]  # the adapters do act
    assert random_codec.task == "cls"  # the human run left the codec as it was
    json.dumps(adapted)
    results = card_results(adapted)
    assert {r["metric"] for r in results} == {"top1", "bpp_est", "bpp_actual", "psnr"}
    assert all(r["images"] == 4 and r["source"] == "measured" for r in results)
    limited = evaluate(random_codec, "cls", data, classifier, size=64, limit=2, protocol="256/224", progress=False)
    assert limited["images"] == 2 and limited["protocol"] == "64/56"


def test_classification_data_errors(tmp_path, random_codec):
    with pytest.raises(IcmhError, match="not a folder"):
        ClassificationData(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IcmhError, match="class folders"):
        ClassificationData(tmp_path / "empty")
    with pytest.raises(IcmhError, match="at least 1"):
        evaluate(random_codec, "cls", tmp_path, torch.nn.Identity(), limit=0)
    with pytest.raises(IcmhError, match="protocol"):
        evaluate(random_codec, "cls", tmp_path, torch.nn.Identity(), protocol="224")
    with pytest.raises(IcmhError, match="--size must be a positive"):
        evaluate(random_codec, "cls", tmp_path, torch.nn.Identity(), size=0)


def test_segmentation_run(tmp_path):
    from icmh_hub.core.recognition import build_detector

    annotations = make_coco(tmp_path)
    codec = build_codec("mbt2018-mean", 1, "seg", pretrained=False)
    detector = build_detector("seg", None)
    # a random detector keeps 100 boxes per image: fewer proposals and boxes keep the test quick
    detector.rpn._post_nms_top_n["testing"] = 100
    detector.roi_heads.detections_per_img = 20
    result = evaluate(codec, "seg", annotations, detector, images=tmp_path / "images", size=96, progress=False)
    metrics = result["metrics"]
    assert result["images"] == 2 and result["protocol"] == "short side 96"
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["bpp_est"] > 0 and metrics["bpp_actual"] > 0
    assert detector.transform.min_size == (800,)  # the protocol size was only borrowed
    json.dumps(result)


def test_missing_image_in_coco(tmp_path):
    annotations = make_coco(tmp_path)
    codec = build_codec("mbt2018-mean", 1, "det", pretrained=False)
    with pytest.raises(IcmhError, match="--images"):
        evaluate(codec, "det", annotations, torch.nn.Identity(), images=tmp_path / "elsewhere", size=96, progress=False)


def test_sweep_curves_and_bd(monkeypatch, tmp_path):
    """The sweep's wiring: base = human mode, adapted = task mode, BD from the two curves."""
    calls = []

    def fake_evaluate(model, task, data, task_model, human=False, **options):
        q = model.quality
        calls.append((q, human))
        rate = 0.1 * 2**q * (1.0 if human else 0.5)  # adapted: half the bits at the same accuracy
        return {"images": 3, "date": "2024-01-01", "metrics": {"bpp_est": rate, "top1": 40.0 + 5 * q}}

    monkeypatch.setattr(sweep_module, "evaluate", fake_evaluate)
    out = sweep_module.sweep("mbt2018-mean", "cls", [1, 2, 3, 4], tmp_path, None, pretrained=False)
    assert sorted(calls) == [(q, h) for q in (1, 2, 3, 4) for h in (False, True)]
    assert [p["q"] for p in out["base"]] == [1, 2, 3, 4]
    assert out["bd_rate"] == pytest.approx(-50.0, abs=1e-6) and out["bd_metric"] > 0
    short = sweep_module.sweep("mbt2018-mean", "cls", [1, 2], tmp_path, None, pretrained=False)
    assert "at least 4" in short["bd_error"] and "bd_rate" not in short


def test_adapter_file_for_the_wrong_task(tmp_path):
    from icmh_hub import build_adapters, save_adapters

    path = save_adapters(build_adapters("mbt2018-mean", 1, task="det"), tmp_path / "det.safetensors", task="det")
    with pytest.raises(IcmhError, match="--task det"):
        build_codec("mbt2018-mean", 1, "cls", adapter=path, pretrained=False)
    codec = build_codec("mbt2018-mean", 1, "det", adapter=path, pretrained=False)
    assert codec.tasks == ["det"] and get_codec(codec.codec).pad_multiple == 64
