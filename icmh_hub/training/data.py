"""Training images: a folder of pictures, random crops and flips, reproducible from a seed.

Any folder works: ImageNet-style class folders, a flat folder, COCO's ``train2017``; files are
found recursively and labels are never read (the training loss needs none). Every random choice
(the epoch's order, each crop, each flip) is drawn from a generator seeded by (seed, epoch,
position), never from global state, so batch ``k`` is the same whether training ran straight
through or was resumed, and whatever the number of loader workers.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.functional import pil_to_tensor

from .._io import is_partial
from ..errors import DataError, IcmhError, ImageTooLargeError, InvalidArgumentError, MissingFileError
from ..formats.images import IMAGE_SUFFIXES, check_pixels

Key = tuple[int, int]  # (epoch, position in that epoch's order)
# Pillow's decompression-bomb threshold: a training image is decoded whole before it is cropped
MAX_TRAINING_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
MAX_CROP = math.isqrt(MAX_TRAINING_PIXELS)


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursively), sorted so the list is the same on every machine."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"data folder {str(root)!r} does not exist; give a folder of images (e.g. ImageNet train or COCO train2017)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not is_partial(p))
    if not files:
        raise DataError(f"no images found under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def mix_seed(*numbers: int) -> int:
    """A simple, stable mix of the numbers into one 63-bit seed (the same on every machine)."""
    seed = 0
    for n in numbers:
        seed = (seed * 1_000_003 + int(n) + 0x9E3779B9) % (2**63 - 1)
    return seed


def _generator(*numbers: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*numbers))


def random_crop_flip(image: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """A ``crop`` x ``crop`` window at a random place (zero padding first if the image is
    smaller), flipped left-right with probability 1/2. ``image`` is (C, H, W)."""
    height, width = image.shape[-2:]
    image = F.pad(image, (0, max(0, crop - width), 0, max(0, crop - height)))
    height, width = image.shape[-2:]
    top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
    image = image[:, top : top + crop, left : left + crop]
    if torch.rand((), generator=generator) < 0.5:
        image = image.flip(-1)
    return image


def files_digest(root: Path, files: list[Path]) -> str:
    """The identity of a data set: how many images, and a digest of their paths relative to ``root``."""
    names = "\n".join(p.relative_to(root).as_posix() for p in files)
    return f"{len(files)} images, sha256 {hashlib.sha256(names.encode()).hexdigest()[:16]}"


class ImageFolder(Dataset):
    """Items are addressed by (epoch, position): the image is the one at that position of the
    epoch's shuffled order, its crop and flip drawn from (seed, epoch, position)."""

    def __init__(self, root: str | os.PathLike, crop: int = 256, seed: int = 42) -> None:
        if not 1 <= crop <= MAX_CROP:
            raise InvalidArgumentError(f"crop size must be 1 to {MAX_CROP} pixels, got {crop}")
        self.root, self.crop, self.seed = Path(root), crop, seed
        self.files = find_images(root)
        self._orders: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def order(self, epoch: int) -> torch.Tensor:
        """The shuffled order of the files in ``epoch``."""
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(len(self.files), generator=_generator(self.seed, epoch))}
        return self._orders[epoch]

    def load(self, path: Path) -> torch.Tensor:
        """The image at ``path``, its size checked from the header before its pixels are decoded."""
        try:
            with warnings.catch_warnings():  # Pillow's bomb warning: the size is checked here instead
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
            with image:
                check_pixels(image.height, image.width, MAX_TRAINING_PIXELS, str(path), " for a training image")
                return pil_to_tensor(image.convert("RGB")).float() / 255
        except ImageTooLargeError as exc:
            raise DataError(f"{exc.args[0].split('; ')[0]}; remove it from the data folder or shrink it") from None
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path} ({exc}); remove it from the data folder") from None

    def __getitem__(self, key: Key) -> torch.Tensor:
        epoch, position = key
        path = self.files[int(self.order(epoch)[position])]
        return random_crop_flip(self.load(path), self.crop, _generator(self.seed, epoch, position, 1))


class StepBatches(Sampler[list[Key]]):
    """Batches ``start``..``stop - 1`` of the endless stream of epochs (each a fresh shuffle):
    batch k holds stream items k*B .. k*B + B - 1, so any batch can be rebuilt from k alone.
    With ``world`` ranks, rank r takes the r-th of ``world`` equal slices of every batch."""

    def __init__(self, num_items: int, batch_size: int, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise InvalidArgumentError(f"a batch of {batch_size} does not split over {world} ranks; give a multiple of {world}")
        self.num_items, self.batch_size, self.start, self.stop = num_items, batch_size, start, stop
        self.share = batch_size // world
        self.offset = rank * self.share

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start, self.stop):
            first = step * self.batch_size + self.offset
            yield [divmod(i, self.num_items) for i in range(first, first + self.share)]


def worker_error(error: Exception) -> Exception:
    """``error`` as one line. A DataLoader worker's error is raised again in the training process
    with the worker's whole traceback in its message; ours keep only their own last line."""
    text = str(error).strip()
    if isinstance(error, IcmhError) and "Original Traceback" in text:
        return type(error)(text.splitlines()[-1].split(": ", 1)[-1])
    return error


def step_loader(dataset: ImageFolder, batch_size: int, start: int, stop: int, workers: int = 0, rank: int = 0,
                world: int = 1) -> DataLoader:
    """A DataLoader giving (rank ``rank`` of ``world``'s slice of) the batches of steps ``start``..``stop - 1``."""
    sampler = StepBatches(len(dataset), batch_size, start, stop, rank, world)
    # own generator: otherwise each new loader iterator draws its base seed from the global RNG,
    # and a resumed run would see different training noise from one that never stopped
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(dataset.seed))
