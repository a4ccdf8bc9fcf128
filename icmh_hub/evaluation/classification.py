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


class ClassificationData:
    """The evaluation images of a class-folder tree: item ``i`` is (image (1, 3, S, S), label)."""

    def __init__(self, root: str | os.PathLike, size: int | None = None, limit: int | None = None) -> None:
        from torchvision import datasets, transforms

        root = Path(root)
        if not root.is_dir():
            raise MissingFileError(f"classification data {str(root)!r} is not a folder; give a folder of class folders (ImageFolder layout)")
        self.size = image_size("cls", size)
        transform = transforms.Compose([transforms.Resize(self.size), transforms.CenterCrop(self.size), transforms.ToTensor()])
        try:
            self.dataset = datasets.ImageFolder(str(root), transform=transform, is_valid_file=_is_image)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"cannot read {root} as class folders of images ({exc})") from None
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


def classify(classifier: nn.Module, x_hat: torch.Tensor, label: int, protocol: str, size: int) -> dict[str, Any]:
    """One reconstruction's record: whether the classifier's top-1 is the label."""
    crop = classifier_crop(size, protocol)
    if crop is not None:
        height, width = x_hat.shape[-2:]
        top, left = (height - crop) // 2, (width - crop) // 2
        x_hat = x_hat[..., top : top + crop, left : left + crop]
    return {"correct": top1_correct(classifier(x_hat), torch.tensor([label]))}


def top1(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {"top1": 100.0 * sum(r["correct"] for r in records) / len(records)}
