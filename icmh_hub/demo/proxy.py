"""A seeded proxy machine-vision data set that runs on a CPU: shapes on natural backgrounds.

Each image holds one object of one of ``SHAPES`` (random colour, size, rotation, position)
pasted on a background that is either a random crop of a photograph shipped with scikit-image
or a procedural texture. The background carries most of the pixels and none of the task, as in
the paper's Fig. 2, so a codec tuned for a recognition model can spend fewer bits on it.

Labels: the class of the object (classification), a per-pixel mask with ``class + 1`` inside
the object and 0 elsewhere (segmentation) and its box ``(x0, y0, x1, y1)`` (detection).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import unknown_name

SHAPES = ("disc", "square", "triangle", "cross", "ring", "star")
_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
    "immunohistochemistry", "coins", "moon", "grass", "gravel", "brick",
)


@dataclass
class ProxyBatch:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    labels: torch.Tensor  # (B,) class index into SHAPES
    masks: torch.Tensor  # (B, H, W) 0 = background, k + 1 = class k
    boxes: torch.Tensor  # (B, 4) x0, y0, x1, y1 in pixels (x1, y1 exclusive)

    def as_8bit(self) -> "ProxyBatch":
        """The batch with its images rounded to 8 bits, as image files hold them (and as the
        trainers, which read files, see them)."""
        return dataclasses.replace(self, images=(self.images * 255).round() / 255)


@lru_cache(maxsize=1)
def _photos() -> tuple[torch.Tensor, ...]:
    """The scikit-image photographs as (3, H, W) float tensors (grey ones repeated)."""
    from skimage import data

    photos = []
    for name in _PHOTOS:
        array = np.asarray(getattr(data, name)(), dtype=np.float32)
        if array.max() > 1:
            array = array / 255.0
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        photos.append(torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1))
    return tuple(photos)


def _photo_crop(size: int, rng: np.random.Generator) -> torch.Tensor:
    photo = _photos()[rng.integers(len(_PHOTOS))]
    height, width = photo.shape[-2:]
    side = int(rng.integers(min(size, height, width), min(height, width) + 1))
    top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
    crop = photo[:, top : top + side, left : left + side].unsqueeze(0)
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def _texture(size: int, rng: np.random.Generator) -> torch.Tensor:
    """Sum of a few coloured sinusoidal gratings plus smooth noise."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    image = torch.zeros(3, size, size)
    for _ in range(3):
        angle, freq, phase = rng.uniform(0, math.pi), rng.uniform(0.05, 0.6), rng.uniform(0, 2 * math.pi)
        wave = torch.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
        image += torch.tensor(rng.uniform(0.1, 0.3, size=3), dtype=torch.float32)[:, None, None] * wave
    noise = torch.from_numpy(rng.standard_normal((1, 3, size // 4 + 1, size // 4 + 1)).astype(np.float32))
    image += 0.15 * F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0]
    return (image + torch.tensor(rng.uniform(0.3, 0.7, size=3), dtype=torch.float32)[:, None, None]).clamp(0, 1)


def _shape_mask(kind: str, size: int, radius: float, angle: float, cy: float, cx: float) -> torch.Tensor:
    """A boolean mask of one shape, drawn analytically in rotated coordinates."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    r, theta = torch.sqrt(u**2 + v**2), torch.atan2(v, u)
    if kind == "disc":
        return r <= radius
    if kind == "square":
        return (u.abs() <= radius * 0.8) & (v.abs() <= radius * 0.8)
    if kind == "triangle":  # equilateral, circumradius = radius
        edges = [u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)]
        return torch.stack(edges).amax(0) <= radius / 2
    if kind == "cross":
        arm = radius * 0.3
        return ((u.abs() <= arm) & (v.abs() <= radius)) | ((v.abs() <= arm) & (u.abs() <= radius))
    if kind == "ring":
        return (r <= radius) & (r >= radius * 0.55)
    if kind == "star":  # five points
        return r <= radius * (0.55 + 0.45 * torch.cos(5 * theta).clamp(min=0))
    raise unknown_name("proxy shape", kind, SHAPES)


def make_proxy(count: int, size: int = 64, seed: int = 0, photo_fraction: float = 0.7) -> ProxyBatch:
    """``count`` proxy images of ``size`` x ``size``, the same for the same seed on any machine."""
    rng = np.random.default_rng(seed)
    images, labels, masks, boxes = [], [], [], []
    for _ in range(count):
        background = _photo_crop(size, rng) if rng.random() < photo_fraction else _texture(size, rng)
        label = int(rng.integers(len(SHAPES)))
        radius = rng.uniform(0.12, 0.22) * size
        margin = radius + 1
        cy, cx = rng.uniform(margin, size - margin, size=2)
        mask = _shape_mask(SHAPES[label], size, radius, rng.uniform(0, 2 * math.pi), cy, cx)
        colour = torch.tensor(rng.uniform(0, 1, size=3), dtype=torch.float32)[:, None, None]
        shade = 1 + 0.15 * torch.from_numpy(rng.standard_normal((1, size, size)).astype(np.float32))
        image = torch.where(mask, (colour * shade).clamp(0, 1), background)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        images.append(image)
        labels.append(label)
        masks.append(mask.long() * (label + 1))
        boxes.append(torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
    return ProxyBatch(torch.stack(images), torch.tensor(labels), torch.stack(masks), torch.stack(boxes))
