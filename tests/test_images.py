"""Reading images of every mode into tensors, padding and cropping, writing PNGs back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from icmh_hub.errors import ImageFileError
from icmh_hub.core.padding import crop, pad
from icmh_hub.formats.images import ImageInfo, as_batch, read_image, tensor_to_pil, write_png

RNG = np.random.default_rng(0)


def _save(tmp_path, name, array, mode=None, **kwargs):
    path = tmp_path / name
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **kwargs)
    return path


def test_rgb_png_is_exact(tmp_path):
    array = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    x, info = read_image(_save(tmp_path, "a.png", array))
    assert x.shape == (1, 3, 7, 5) and x.dtype == torch.float32
    assert info == ImageInfo("RGB", 8, False)
    assert torch.equal((x[0].permute(1, 2, 0) * 255).round().byte(), torch.from_numpy(array))


def test_rgba_drops_alpha_with_a_warning(tmp_path):
    array = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    with pytest.warns(UserWarning, match="alpha"):
        x, info = read_image(_save(tmp_path, "a.png", array))
    assert info.alpha_dropped and info.mode == "RGB"
    assert torch.equal((x[0].permute(1, 2, 0) * 255).round().byte(), torch.from_numpy(array[..., :3]))


def test_grayscale_8_and_16_bit(tmp_path):
    gray8 = RNG.integers(0, 256, (3, 9), dtype=np.uint8)
    x, info = read_image(_save(tmp_path, "g8.png", gray8))
    assert info == ImageInfo("L", 8) and x.shape == (1, 3, 3, 9)
    assert torch.equal(x[0, 0], x[0, 2])
    gray16 = RNG.integers(0, 65536, (5, 4), dtype=np.uint16)
    for name in ("g16.png", "g16.tif"):
        x, info = read_image(_save(tmp_path, name, gray16))
        assert info == ImageInfo("L", 16)
        # full 16-bit precision survives (8 bits would be off by up to 255 levels)
        assert torch.equal((x[0, 0].double() * 65535).round().long(), torch.from_numpy(gray16.astype(np.int64)))


def test_other_modes_are_converted(tmp_path):
    rgb = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    cases = {
        "p.png": ("P", ImageInfo("RGB", 8)),
        "one.png": ("1", ImageInfo("L", 8)),
        "la.png": ("LA", ImageInfo("L", 8, True)),
        "cmyk.jpg": ("CMYK", ImageInfo("RGB", 8)),
        "w.webp": ("RGB", ImageInfo("RGB", 8)),
    }
    for name, (mode, expected) in cases.items():
        with pytest.warns(UserWarning) if expected.alpha_dropped else _no_warning():
            x, info = read_image(_save(tmp_path, name, rgb, mode))
        assert info == expected, name
        assert x.shape == (1, 3, 6, 6) and 0 <= x.min() and x.max() <= 1


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 30, 3), dtype=np.uint8)
    array[:, :10] = 255  # white band on the left, stored landscape
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    image.save(path, exif=exif, quality=95)
    x, _ = read_image(path)
    assert x.shape == (1, 3, 30, 10)  # displayed upright: portrait
    assert x[0, :, :8].mean() > 0.9 and x[0, :, 12:].mean() < 0.1  # the band is now on top


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_non_images_are_refused(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageFileError, match="not a readable image"):
        read_image(path)


def test_truncated_and_missing_and_float(tmp_path):
    good = _save(tmp_path, "good.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageFileError):
        read_image(cut)
    with pytest.raises(ImageFileError, match="no such"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageFileError, match="no such"):
        read_image(tmp_path)
    floats = tmp_path / "f.tif"
    Image.fromarray(RNG.random((4, 4)).astype(np.float32)).save(floats)
    with pytest.raises(ImageFileError, match="floating-point"):
        read_image(floats)


@pytest.mark.parametrize("size", [(1, 1), (65, 33), (64, 128)])
def test_pad_and_crop(size):
    x = torch.rand(1, 3, *size)
    padded = pad(x, 64)
    assert padded.shape[-2] % 64 == 0 and padded.shape[-1] % 64 == 0
    assert padded.shape[-2] - size[0] < 64 and padded.shape[-1] - size[1] < 64
    assert torch.equal(crop(padded, *size), x)
    assert torch.equal(padded[..., -1, : size[1]], x[..., -1, :])  # edges replicated
    assert torch.equal(padded[..., : size[0], -1], x[..., :, -1])


def test_as_batch_checks():
    assert as_batch(torch.rand(3, 2, 2)).shape == (1, 3, 2, 2)
    for bad in (torch.rand(2, 3, 4, 4), torch.rand(1, 4, 4), torch.full((3, 2, 2), 2.0), torch.zeros(3, 2, 2, dtype=torch.uint8)):
        with pytest.raises(ImageFileError):
            as_batch(bad)
    with pytest.raises(ImageFileError):
        as_batch(np.zeros((3, 2, 2)))


def test_write_png_round_trips(tmp_path):
    rgb = torch.from_numpy(RNG.integers(0, 256, (1, 3, 5, 7))).float() / 255
    back, info = read_image(write_png(rgb, tmp_path / "rgb.png"))
    assert info == ImageInfo("RGB", 8) and torch.allclose(back, rgb, atol=1e-6)
    gray = (torch.from_numpy(RNG.integers(0, 65536, (5, 7))).double() / 65535).float()
    path = write_png(gray.expand(1, 3, 5, 7), tmp_path / "g.png", ImageInfo("L", 16))
    back, info = read_image(path)
    assert info == ImageInfo("L", 16)
    assert torch.equal((back[0, 0].double() * 65535).round(), (gray.double() * 65535).round())
    assert tensor_to_pil(gray.expand(3, 5, 7), ImageInfo("L", 8)).mode == "L"
    assert not list(tmp_path.glob("*.partial"))
