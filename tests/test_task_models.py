"""Task models: frozen, [0, 1] inputs, the right feature levels, weights from names or files."""

from __future__ import annotations

import pytest
import torch

from icmh_hub.errors import IcmhError, UnknownNameError
from icmh_hub.core.recognition import (
    TaskFeatures,
    build_classifier,
    build_detector,
    detectron2_available,
)


@pytest.fixture(scope="module")
def cls_features():
    torch.manual_seed(0)
    return TaskFeatures("cls", weights=None)


def test_classifier_features_are_the_four_resnet_stages(cls_features):
    features = cls_features(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(2, 256, 16, 16), (2, 512, 8, 8), (2, 1024, 4, 4), (2, 2048, 2, 2)]


def test_task_features_are_frozen_and_stay_in_eval(cls_features):
    parent = torch.nn.ModuleDict({"features": cls_features}).train()
    assert not cls_features.training and not any(m.training for m in cls_features.modules())
    assert not any(p.requires_grad for p in cls_features.parameters())


def test_distortion_weights_levels_as_the_paper(cls_features):
    reference = [torch.zeros(1, 2, 2, 2) for _ in range(4)]
    shifted = [torch.full((1, 2, 2, 2), float(i + 1)) for i in range(4)]  # MSE 1, 4, 9, 16
    assert cls_features.distortion(reference, shifted).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert cls_features.distortion(reference, reference).item() == 0.0


@pytest.mark.parametrize("task", ["det", "seg"])
def test_detector_features_are_fpn_levels_p2_to_p6(task):
    features_module = TaskFeatures(task, weights=None)
    features = features_module(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 256, 16, 16), (1, 256, 8, 8), (1, 256, 4, 4), (1, 256, 2, 2), (1, 256, 1, 1)]
    levels = [torch.zeros_like(f) for f in features]
    ones = [torch.ones_like(f) for f in features]
    assert features_module.distortion(levels, ones).item() == pytest.approx(0.2 * 5)


def test_classifier_normalises_inside_and_is_frozen():
    classifier = build_classifier(weights=None)
    image = torch.rand(1, 3, 64, 64)
    expected = classifier.model((image - classifier.normalize.mean) / classifier.normalize.std)
    assert torch.equal(classifier(image), expected)
    assert not classifier.training and not any(p.requires_grad for p in classifier.parameters())


def test_detector_takes_list_of_images():
    detector = build_detector("det", weights=None)
    assert not detector.training and not any(p.requires_grad for p in detector.parameters())
    detector.transform.min_size, detector.transform.max_size = (64,), 128  # keep the test fast
    with torch.no_grad():
        out = detector([torch.rand(3, 64, 80)])
    assert set(out[0]) >= {"boxes", "labels", "scores"}


def test_weights_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    source = build_classifier(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(source.model.state_dict(), path)
    loaded = build_classifier(weights=str(path))
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(image), source(image))


def test_bad_weights_give_clear_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="IMAGENET1K_V1"):
        build_classifier(weights="IMAGENET_V9")
    with pytest.raises(IcmhError, match="does not exist"):
        build_classifier(weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(IcmhError, match="does not fit"):
        build_classifier(weights=str(wrong))
    with pytest.raises(UnknownNameError, match="did you mean 'det'"):
        TaskFeatures("dett", weights=None)
    with pytest.raises(IcmhError, match="build_classifier"):
        build_detector("cls", weights=None)


@pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed")
def test_detectron2_backend_gives_p2_to_p6():
    features = TaskFeatures("det", weights=None, backend="detectron2")(torch.rand(1, 3, 64, 64))
    assert len(features) == 5 and features[0].shape[-1] == 16


def test_detectron2_backend_missing_is_a_clear_error():
    if detectron2_available():
        pytest.skip("detectron2 is installed")
    with pytest.raises(IcmhError, match="needs detectron2"):
        TaskFeatures("det", weights=None, backend="detectron2")
