"""Classification in the reference protocol: an ImageFolder of class folders, each image resized
and center-cropped, coded, and classified (whole, or its center 224 crop for ``256/224``).

The class index is the folder's position in sorted order, which is torchvision's index for
ImageNet synset folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError, MissingFileError
from ..formats.images import IMAGE_SUFFIXES
from .metrics import top1_correct
from .protocol import classifier_crop, image_size, subset


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


UNLABELLED = "agreement with the task model's top-1 on the uncompressed image (the folder has no labels)"


def _flat_images(root: Path) -> list[Path]:
    """The images directly in ``root`` when it has no sub-folders (a folder without labels)."""
    if any(child.is_dir() for child in root.iterdir()):
        return []
    return sorted(child for child in root.iterdir() if _is_image(child.name))


class _Unlabelled:
    """A flat folder of images as an ImageFolder-like data set whose labels are None."""

    def __init__(self, files: list[Path], transform) -> None:
        self.samples, self.transform = [(str(f), None) for f in files], transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, None]:
        from PIL import Image

        with Image.open(self.samples[index][0]) as image:
            return self.transform(image.convert("RGB")), None


class ClassificationData:
    """The evaluation images of a class-folder tree: item ``i`` is (image (1, 3, S, S), label).

    A flat folder of images (no class folders) has no labels: its items' labels are None and
    top-1 becomes agreement with the classifier's own prediction on the uncompressed image."""

    def __init__(self, root: str | os.PathLike, size: int | None = None, limit: int | None = None) -> None:
        from torchvision import datasets, transforms

        root = Path(root)
        if not root.is_dir():
            raise MissingFileError(f"classification data {str(root)!r} is not a folder; give a folder of class folders (ImageFolder layout)")
        self.size = image_size("cls", size)
        transform = transforms.Compose([transforms.Resize(self.size), transforms.CenterCrop(self.size), transforms.ToTensor()])
        flat = _flat_images(root)
        self.labelled = not flat
        try:
            self.dataset = _Unlabelled(flat, transform) if flat else datasets.ImageFolder(str(root), transform=transform, is_valid_file=_is_image)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"cannot read {root} as class folders of images, nor as a flat folder of images ({exc})") from None
        self.indices = subset(len(self.dataset), limit)

    def __len__(self) -> int:
        return len(self.indices)

    def item(self, position: int) -> tuple[torch.Tensor, int]:
        index = self.indices[position]
        try:
            image, label = self.dataset[index]
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise DataError(f"cannot read {self.dataset.samples[index][0]} ({type(exc).__name__}); remove it from the data folder") from None
        return image.unsqueeze(0), label


def _center(image: torch.Tensor, crop: int | None) -> torch.Tensor:
    if crop is None:
        return image
    height, width = image.shape[-2:]
    top, left = (height - crop) // 2, (width - crop) // 2
    return image[..., top : top + crop, left : left + crop]


def classify(classifier: nn.Module, x_hat: torch.Tensor, label: int | None, protocol: str, size: int,
             original: torch.Tensor | None = None) -> dict[str, Any]:
    """One reconstruction's record: whether the classifier's top-1 is the label, or (label None)
    the classifier's top-1 on ``original``, the uncompressed image."""
    crop = classifier_crop(size, protocol)
    if label is None:
        label = int(classifier(_center(original, crop)).argmax(1)[0])
    return {"correct": top1_correct(classifier(_center(x_hat, crop)), torch.tensor([label], device=x_hat.device))}


def top1(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {"top1": 100.0 * sum(r["correct"] for r in records) / len(records)}
