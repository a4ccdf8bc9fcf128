"""Real photographs that ship inside installed packages, cut into crops at the protocol's size.

scikit-image (a dependency) holds a dozen photographs under CC0, public domain or "no known
copyright restrictions" (each function's docstring says which). ``benchmarks.real_photos``
builds its train / held-out data set from them and from other packages' photographs; the demo
codes the crops of the scikit-image photographs that data set holds out, so that no picture the
demo shows was seen in training the photo zoo it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from ..formats.images import pil_to_tensor

SKIMAGE = {  # name -> licence, as the function's docstring states it
    "astronaut": "public domain (NASA)", "camera": "CC0", "chelsea": "CC0", "coffee": "CC0",
    "rocket": "public domain (SpaceX)", "hubble_deep_field": "public domain (NASA)", "retina": "CC0",
    "immunohistochemistry": "no known copyright restrictions", "coins": "no known copyright restrictions",
    "grass": "CC0", "gravel": "CC0", "brick": "CC0",
}
# The scikit-image photographs on the held-out side of benchmarks.real_photos's split (seed 0,
# all three sources installed), which the photo zoo was trained without.
HELD_OUT = ("chelsea", "rocket", "immunohistochemistry", "gravel")
CROP, SHORT_SIDE = 256, 1280


@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    licence: str
    load: Callable[[], Image.Image]


def skimage_photos(names: tuple[str, ...] = tuple(SKIMAGE)) -> Iterator[Photo]:
    """The scikit-image photographs ``names`` (none when scikit-image is missing)."""
    try:
        from skimage import data
    except ImportError:
        return
    for name in names:
        yield Photo(f"skimage-{name}", "scikit-image", SKIMAGE[name], lambda name=name: Image.fromarray(getattr(data, name)()))


def crops(image: Image.Image, crop: int = CROP, short_side: int = SHORT_SIDE) -> list[tuple[tuple[int, int], Image.Image]]:
    """Non-overlapping crop x crop tiles ((left, top), tile) of the RGB image scaled down to a
    short side of at most ``short_side``."""
    image = image.convert("RGB")
    image.info.pop("icc_profile", None)  # some wallpapers' profiles are malformed (libpng warns on every read)
    scale = min(1.0, short_side / min(image.size))
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return [((left, top), image.crop((left, top, left + crop, top + crop)))
            for top in range(0, image.height - crop + 1, crop) for left in range(0, image.width - crop + 1, crop)]


def held_out_crops() -> tuple[torch.Tensor, list[str]]:
    """Every crop of the held-out scikit-image photographs, (N, 3, 256, 256) in [0, 1] (8-bit
    values), with names ``PHOTO-LEFT-TOP`` as the data set names its files."""
    images, names = [], []
    for photo in skimage_photos(HELD_OUT):
        for (left, top), tile in crops(photo.load()):
            images.append(pil_to_tensor(tile, photo.name)[0][0])
            names.append(f"{photo.name}-{left}-{top}")
    return torch.stack(images), names
