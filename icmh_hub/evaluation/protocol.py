"""The evaluation protocol's rules, shared by every evaluation and by the figures drawn from it.

- Classification (reference protocol ``"256"``): Resize(256) short side, CenterCrop(256), code
  the 256x256 image, classify the whole reconstruction; ``"256/224"`` (the common ImageNet
  protocol) classifies the center 224x224 of the reconstruction instead.
- Detection / segmentation: short side 800 (long side at most 1333), code at that size (padded
  by the one padding policy, cropped back), run the detector at that size.
- ``--limit N``: a fixed random subset (seed 0) of the classification images, or the first N
  COCO ids.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.tasks import get_task
from ..errors import InvalidArgumentError, unknown_name

PROTOCOLS = ("256", "256/224")
MAX_TO_SHORT = 1333 / 800  # COCO protocol: short side 800, long side at most 1333
SUBSET_SEED = 0


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise unknown_name("classification protocol", protocol, PROTOCOLS)
    return protocol


def check_limit(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"--limit must be at least 1, got {limit}")
    return limit


def image_size(task: str, size: int | None) -> int:
    """The protocol's size (cls: resize and crop; det / seg: short side), or ``size`` when given."""
    if size is None:
        return get_task(task).eval_size
    if size < 1:
        raise InvalidArgumentError(f"--size must be a positive number of pixels, got {size}")
    return size


def classifier_crop(size: int, protocol: str) -> int | None:
    """The center crop the classifier sees (None: the whole reconstruction)."""
    return round(size * 224 / 256) if check_protocol(protocol) == "256/224" else None


def resized_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the short side ``short`` unless the long side would pass ``max_size``
    (detectron2's ResizeShortestEdge rule, rounding to the nearest pixel)."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def subset(count: int, limit: int | None) -> list[int]:
    """All indices, or ``limit`` of them drawn with a fixed seed (so a subset spans the classes)."""
    import torch

    if check_limit(limit) is None or limit >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return sorted(torch.randperm(count, generator=generator)[:limit].tolist())


def protocol_label(task: str, protocol: str = "256", size: int | None = None) -> str:
    """How the images were prepared, in words short enough for a table: "256", "256/224", or
    "short side 800" (with the size actually used when it was overridden)."""
    size = image_size(task, size)
    if task != "cls":
        return f"short side {size}"
    crop = classifier_crop(size, protocol)
    return f"{size}/{crop}" if crop else str(size)


def default_dataset_name(data: str | os.PathLike) -> str:
    path = Path(data)
    return path.stem if path.is_file() else path.name
