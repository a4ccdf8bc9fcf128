"""Small recognition models for the proxy data set: a classifier and a segmenter that train on a CPU.

They stand in for ResNet-50 / Mask R-CNN in the demo zoo. Both expose ``features(x)``, the
outputs of their four stages, which the task distortion compares between an original and its
reconstruction, as the paper does with ResNet-50's stages (``task_features``). Their trained
weights ship in the package beside the demo adapters (``adapters/demo``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..core.recognition import Normalize, TaskFeatures, freeze
from ..errors import CheckpointError, MissingFileError, unknown_name
from .proxy import SHAPES, ProxyBatch

DEMO_FOLDER = "demo"


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StageNet(nn.Module):
    """Four conv stages at 1/2, 1/4, 1/8, 1/16 resolution; ImageNet normalisation inside."""

    widths = (24, 48, 96, 128)

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize()
        cins = (3,) + self.widths[:-1]
        self.stages = nn.ModuleList(_stage(cin, cout) for cin, cout in zip(cins, self.widths))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class ProxyClassifier(StageNet):
    """Which shape is in the image: logits over ``SHAPES``."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(self.widths[-1], len(SHAPES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1].mean(dim=(2, 3)))


class ProxySegmenter(StageNet):
    """Per-pixel class (0 = background, k + 1 = shape k): all four stages meet at 1/4 of the
    image size, where a 1x1 head classifies; its logits are upsampled to the pixels (cheap on a
    CPU, unlike upsampling every feature map to full size)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(sum(self.widths), len(SHAPES) + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] // 4, x.shape[-1] // 4)
        feats = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in self.features(x)]
        logits = self.head(torch.cat(feats, dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


MODELS: dict[str, Callable[[], StageNet]] = {"cls": ProxyClassifier, "seg": ProxySegmenter}
METRICS = {"cls": "top1", "seg": "miou"}


class _Stages(nn.Module):
    def __init__(self, model: StageNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.features(x)


def build_model(task: str) -> StageNet:
    if task not in MODELS:
        raise unknown_name("proxy task", task, sorted(MODELS))
    return MODELS[task]()


def task_loss(task: str, model: nn.Module, batch: ProxyBatch) -> torch.Tensor:
    """Cross-entropy against the labels (cls) or the masks (seg)."""
    target = batch.labels if task == "cls" else batch.masks
    return F.cross_entropy(model(batch.images), target)


@torch.no_grad()
def top1(model: nn.Module, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The model's top-1 class of each image (of each pixel, for a segmentation model), ``chunk``
    images at a time."""
    return torch.cat([model(images[i : i + chunk]).argmax(1) for i in range(0, len(images), chunk)])


def task_score(task: str, model: nn.Module, images: torch.Tensor, batch: ProxyBatch, chunk: int = 256) -> float:
    """Top-1 accuracy (cls) or mean IoU over the shape classes (seg, pooled over the set), in
    [0, 1], of ``model`` on ``images`` (originals or reconstructions) against ``batch``'s labels."""
    model.eval()
    predicted = top1(model, images, chunk)
    if task == "cls":
        return (predicted == batch.labels).float().mean().item()
    ious = []
    for k in range(1, len(SHAPES) + 1):
        truth, guess = batch.masks == k, predicted == k
        if truth.any():
            ious.append(((truth & guess).sum() / (truth | guess).sum()).item())
    return sum(ious) / len(ious)


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half of a batch blurred (sigma up to 1.5 px) and noised (up to 0.05): the imperfect
    pictures a recognition model trained on photographs has seen. Without it a model trained
    only on perfect synthetic images fails on any reconstruction, which no real model does."""
    from torchvision.transforms.functional import gaussian_blur

    out = images.clone()
    for i in range(0, len(images), 2):
        sigma = float(torch.empty(1).uniform_(0.1, 1.5, generator=generator))
        noise = float(torch.empty(1).uniform_(0.0, 0.05, generator=generator))
        blurred = gaussian_blur(images[i : i + 1], kernel_size=7, sigma=sigma)
        out[i : i + 1] = (blurred + noise * torch.randn(blurred.shape, generator=generator)).clamp(0, 1)
    return out


def train_model(task: str, data: ProxyBatch, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                log: Callable[[int, float], None] | None = None) -> StageNet:
    """Train a proxy task model (one-cycle Adam) on the proxy images, half of each batch degraded
    (``degrade``); returns it frozen, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(task)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(data.images), (batch_size,), generator=generator)
        images = degrade(data.images[index], generator)
        loss = task_loss(task, model, ProxyBatch(images, data.labels[index], data.masks[index], data.boxes[index]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if log is not None:
            log(step, loss.item())
    return freeze(model.eval())


def shipped_path(task: str) -> Path:
    """Where the demo zoo's trained ``task`` model lives inside the installed package."""
    return Path(str(files("icmh_hub.index") / DEMO_FOLDER / f"proxy-{task}.safetensors"))


def load_model(task: str, path: str | os.PathLike | None = None) -> StageNet:
    """The trained proxy model of ``task`` (the shipped one unless ``path`` is given), frozen."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else shipped_path(task)
    model = build_model(task)
    if not path.is_file():
        raise MissingFileError(f"no trained proxy {task} model at {path}; run `python -m benchmarks.proxy` to train the demo zoo")
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path} does not hold a proxy {task} model ({str(exc).splitlines()[0][:120]}); re-run `python -m benchmarks.proxy`") from None
    return freeze(model.eval())


def task_features(task: str, model: StageNet) -> TaskFeatures:
    """The training distortion's feature extractor for a proxy model (its four stages)."""
    return TaskFeatures(task, net=_Stages(model))


def _registered(task: str, weights: str | os.PathLike | None) -> StageNet:
    """The proxy ``task`` model as a registered task model (``core.task_models``): "DEFAULT" = the
    shipped weights, a file = those, None = random."""
    if weights is None:
        return build_model(task)
    return load_model(task, None if weights == "DEFAULT" else weights)


def registered_proxy_cls(weights: str | os.PathLike | None) -> StageNet:
    return _registered("cls", weights)


def registered_proxy_seg(weights: str | os.PathLike | None) -> StageNet:
    return _registered("seg", weights)
