"""Frozen recognition models: the task networks that adapters are trained for and evaluated with.

Every model here takes images in [0, 1] and handles its own input normalisation, is in eval mode
and has no trainable parameter. ``weights`` is a torchvision weights name (``"DEFAULT"``,
``"IMAGENET1K_V1"``, ...), a local file (a state_dict saved with torch.save, read with
``weights_only=True``, or a safetensors file), or None for random weights (tests; no download).

``TaskFeatures`` gives the feature maps the training distortion compares:
classification = ResNet-50 layer1..layer4; detection / segmentation = the R50-FPN backbone of
Faster / Mask R-CNN, levels P2..P6. torchvision is the default backend; detectron2 (the paper's
recognition models) is used when asked for with ``backend="detectron2"`` and installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._io import read_state_dict
from ..errors import CheckpointError, DownloadError, InvalidArgumentError, MissingDependencyError, unknown_name
from .tasks import get_task

BACKENDS = ("torchvision", "detectron2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Weights = str | os.PathLike | None


def freeze(model: nn.Module) -> nn.Module:
    """eval mode and no gradients for any parameter: the task model is a fixed measuring stick."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


_WEIGHT_SUFFIXES = {".pth", ".pt", ".safetensors", ".bin", ".tar", ".pkl", ".ckpt"}


def _is_file(weights: Weights) -> bool:
    """A path, not a torchvision weights name (names such as ``ResNet50_Weights.IMAGENET1K_V1`` have dots)."""
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or Path(weights).exists() or Path(weights).suffix.lower() in _WEIGHT_SUFFIXES
    )


def _load_file_into(model: nn.Module, path: Weights) -> nn.Module:
    try:
        model.load_state_dict(read_state_dict(path, "task model weights"))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not fit {type(model).__name__} ({first}); give weights for that architecture") from None
    return model


def _torchvision(builder: Any, enum: Any, weights: Weights, **kwargs: Any) -> nn.Module:
    """Build a torchvision model from a weights name, a file or None, with clear errors."""
    if weights is None or _is_file(weights):
        model = builder(weights=None, **kwargs)
        return model if weights is None else _load_file_into(model, weights)
    try:
        chosen = enum.verify(weights)
    except (KeyError, ValueError):
        names = list(dict.fromkeys(["DEFAULT", *enum.__members__]))
        raise unknown_name(f"{enum.__name__} weights", weights, names, hint="Or give a local file, or None for random weights.") from None
    try:
        return builder(weights=chosen, **kwargs)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise DownloadError(
            f"could not get torchvision weights {chosen} ({type(exc).__name__}: {exc}); download them "
            "once with network access, or pass a local weights file (or random weights for tests)"
        ) from None


class Normalize(nn.Module):
    """[0, 1] RGB -> (x - mean) / std, per channel."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A torchvision classifier that takes [0, 1] images (normalisation inside); ``model`` is it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def _resnet50(weights: Weights) -> nn.Module:
    from torchvision.models import ResNet50_Weights, resnet50

    return _torchvision(resnet50, ResNet50_Weights, weights)


def build_classifier(weights: Weights = "DEFAULT") -> Classifier:
    """torchvision ResNet-50 taking [0, 1] images, frozen, in eval mode (logits out)."""
    return freeze(Classifier(_resnet50(weights)))


def build_detector(task: str = "det", weights: Weights = "DEFAULT") -> nn.Module:
    """torchvision Faster R-CNN (``det``) or Mask R-CNN (``seg``) R50-FPN, frozen, eval mode.

    It takes a list of [0, 1] images, as torchvision's detectors do (they resize and normalise
    inside). With random weights no ImageNet backbone is downloaded either.
    """
    from torchvision.models import detection as tvd

    if get_task(task).name == "cls":
        raise InvalidArgumentError("build_detector is for det or seg; use build_classifier for cls")
    builder, enum = {
        "det": (tvd.fasterrcnn_resnet50_fpn, tvd.FasterRCNN_ResNet50_FPN_Weights),
        "seg": (tvd.maskrcnn_resnet50_fpn, tvd.MaskRCNN_ResNet50_FPN_Weights),
    }[task]
    return freeze(_torchvision(builder, enum, weights, weights_backbone=None))


class TaskFeatures(nn.Module):
    """[0, 1] images -> the list of feature maps the task distortion compares.

    ``distortion(reference, features)`` is the paper's D: cls = mean over the four ResNet stages
    of the per-stage MSE; det / seg = 0.2 * sum of the per-level MSE over P2..P6. ``net`` replaces
    the torchvision model by your own (a module mapping [0, 1] images to a list of feature maps),
    e.g. the demo zoo's small proxy models. The module is frozen and stays in eval mode even if a
    parent calls ``train()``.
    """

    def __init__(self, task: str, weights: Weights = "DEFAULT", backend: str = "torchvision", net: nn.Module | None = None) -> None:
        super().__init__()
        self.task = get_task(task).name
        if backend not in BACKENDS:
            raise unknown_name("task model backend", backend, BACKENDS)
        self.backend = backend if net is None else "custom"
        if net is not None:  # your own recognition model: any module from [0, 1] images to a feature list
            self.net = net
        elif backend == "detectron2":
            self.net = _Detectron2Features(task, weights)
        elif task == "cls":
            self.net = _ResNetStages(_resnet50(weights))
        else:
            self.net = _FPNLevels(build_detector(task, weights))
        freeze(self)

    def train(self, mode: bool = True) -> "TaskFeatures":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def distortion(self, reference: Sequence[torch.Tensor], features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weighted sum over levels of the MSE between two feature lists (the training D)."""
        terms = [F.mse_loss(f.float(), r.float()) for f, r in zip(features, reference, strict=True)]
        return get_task(self.task).level_weight * torch.stack(terms).sum()


class _ResNetStages(nn.Module):
    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layers = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.normalize(x))
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class _FPNLevels(nn.Module):
    """The R50-FPN backbone of a torchvision detector: outputs '0'..'3' (P2..P5) and 'pool' (P6)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        transform = detector.transform
        self.normalize = Normalize(transform.image_mean, transform.image_std)
        self.backbone = detector.backbone

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(self.normalize(x)).values())


_D2_CONFIGS = {"det": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "seg": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"}


def detectron2_available() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


class _Detectron2Features(nn.Module):
    """detectron2's R50-FPN backbone (p2..p6) as the reference uses it: BGR * 255 minus the
    config's pixel mean (divided by its std, 1 for these models), padded to a multiple of 32."""

    def __init__(self, task: str, weights: Weights) -> None:
        super().__init__()
        if task == "cls":
            raise InvalidArgumentError("the detectron2 backend has det and seg models only; use backend='torchvision' for cls")
        if not detectron2_available():
            raise MissingDependencyError("backend 'detectron2' needs detectron2 installed (see its install guide); or use backend='torchvision'")
        from detectron2 import model_zoo
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_backbone

        cfg = model_zoo.get_config(_D2_CONFIGS[task])
        cfg.MODEL.DEVICE = "cpu"
        self.backbone = build_backbone(cfg)
        self.register_buffer("mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            url = model_zoo.get_checkpoint_url(_D2_CONFIGS[task]) if weights == "DEFAULT" else str(weights)
            holder = nn.Module()
            holder.backbone = self.backbone  # checkpoint keys are backbone.*, like the full model's
            DetectionCheckpointer(holder).load(url)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x.flip(1) * 255 - self.mean) / self.std
        divisor = max(32, getattr(self.backbone, "size_divisibility", 32) or 32)
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % divisor, 0, -height % divisor))
        out = self.backbone(x)
        return [out[name] for name in ("p2", "p3", "p4", "p5", "p6")]
