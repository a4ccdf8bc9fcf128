"""Training data: any image folder, crops padded when small, flips, all reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from icmh_hub.training.data import ImageFolder, StepBatches, find_images, random_crop_flip, step_loader
from icmh_hub.errors import IcmhError


def write_images(root, sizes, nested=True):
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(sizes):
        folder = root / (f"class_{i % 2}" if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    (root / "labels.txt").write_text("not an image")
    return root


def test_finds_images_in_class_folders_and_flat(tmp_path):
    nested = write_images(tmp_path / "nested", [(20, 30)] * 3)
    flat = write_images(tmp_path / "flat", [(20, 30)] * 2, nested=False)
    assert [p.name for p in find_images(nested)] == ["0.png", "2.png", "1.png"]  # sorted by path
    assert len(find_images(flat)) == 2


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(IcmhError, match="does not exist"):
        find_images(tmp_path / "nope")
    with pytest.raises(IcmhError, match="no images found"):
        find_images(tmp_path)


def test_small_images_are_padded_and_crops_have_the_size(tmp_path):
    data = ImageFolder(write_images(tmp_path, [(20, 90), (70, 40)]), crop=48, seed=1)
    for epoch in range(3):
        for position in range(2):
            crop = data[(epoch, position)]
            assert crop.shape == (3, 48, 48) and 0 <= crop.min() and crop.max() <= 1


def test_crops_are_windows_of_the_image_some_flipped():
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    windows = [image[:, t : t + 3, l : l + 3] for t in range(2) for l in range(4)]
    crops = [random_crop_flip(image, 3, torch.Generator().manual_seed(s)) for s in range(40)]
    plain = [any(torch.equal(c, w) for w in windows) for c in crops]
    flipped = [any(torch.equal(c, w.flip(-1)) for w in windows) for c in crops]
    assert all(p or f for p, f in zip(plain, flipped))
    assert any(plain) and any(flipped)
    assert len({tuple(c.flatten().tolist()) for c in crops}) > 5
    same = [random_crop_flip(image, 3, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*same)


def test_batches_are_reproducible_and_independent_of_global_rng(tmp_path):
    root = write_images(tmp_path, [(40, 50)] * 5)
    first = [b.clone() for b in step_loader(ImageFolder(root, 32, seed=3), 2, 0, 6)]
    torch.manual_seed(123)
    again = [b.clone() for b in step_loader(ImageFolder(root, 32, seed=3), 2, 0, 6)]
    resumed = [b.clone() for b in step_loader(ImageFolder(root, 32, seed=3), 2, 4, 6)]
    other_seed = [b.clone() for b in step_loader(ImageFolder(root, 32, seed=4), 2, 0, 6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(a, b) for a, b in zip(first[4:], resumed))
    assert not all(torch.equal(a, b) for a, b in zip(first, other_seed))


def test_every_image_once_per_epoch():
    batches = list(StepBatches(num_items=5, batch_size=2, start=0, stop=5))  # 10 items = 2 epochs
    keys = [key for batch in batches for key in batch]
    assert keys[:5] == [(0, i) for i in range(5)] and keys[5:] == [(1, i) for i in range(5)]
