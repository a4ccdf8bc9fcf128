"""Images in and out of the codec: files -> float tensors in [0, 1], padding, cropping, PNGs.

What happens to each kind of input (the codecs code 3-channel RGB):
- EXIF orientation is applied first (``ImageOps.exif_transpose``): the image is coded upright and
  its size is the upright size.
- RGB (8 bit) is coded as is. CMYK, YCbCr, palette and other colour modes are converted to RGB.
- Grayscale (8 or 16 bit) is repeated into 3 channels for coding; the header records it, and
  decoding writes a grayscale PNG (the mean of the decoded channels) of the same bit depth.
- 16-bit grayscale keeps its full precision on the way in ([0, 65535] -> [0, 1]). 16-bit RGB
  files are read by Pillow as 8-bit RGB (it has no 16-bit RGB mode), so they are coded from 8 bits.
- Alpha (RGBA, LA, palette with transparency) is dropped with a warning: the colour channels are
  coded as stored, the transparency is not (the codecs have no alpha channel).
- 32-bit float images are refused (their range is unknown); convert them to 8 or 16 bit.
- Animated or multi-page files (GIF, APNG, WebP, TIFF) are coded as their first frame, with a
  warning that says how many frames were left out.
- ``max_pixels``: an image with more pixels is refused (``ImageTooLargeError``) from its header,
  before its pixels are decoded. Pillow's own decompression-bomb warning (above 89 MP) is a
  warning like the others, and its error (above 179 MP) an ``ImageFileError``.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .._io import atomic_path
from ..errors import ImageFileError, ImageTooLargeError

# the image files icmh-hub reads anywhere (compress, training data, evaluation folders)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm")
MAX_SIDE = 1 << 16  # pixels per side of a coded image (formats.bitstream's header limit)
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageInfo:
    """How an image was read: the mode to write it back in, its bit depth, whether alpha was lost."""

    mode: str = "RGB"  # "RGB" or "L"
    bits: int = 8  # 8 or 16
    alpha_dropped: bool = False


def read_image(path: str | os.PathLike, max_pixels: int | None = None, why: str = "") -> tuple[torch.Tensor, ImageInfo]:
    """Read an image file as a (1, 3, H, W) float32 tensor in [0, 1] and how to write it back.

    ``max_pixels``: refuse a larger image before decoding its pixels (``why`` is added to the
    message: what the limit protects)."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            if max_pixels is not None:
                check_pixels(image.height, image.width, max_pixels, str(path), why)
            frames = getattr(image, "n_frames", 1)
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageTooLargeError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFileError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); give a PNG, JPEG, WebP or TIFF file") from None
    if frames > 1:
        warnings.warn(f"{path}: {frames} frames; only the first is coded", stacklevel=2)
    tensor, info = pil_to_tensor(image, name=str(path))
    return tensor, info


def pixel_count(pixels: int) -> str:
    """A number of pixels for people: "6.2 MP", or "1,000 pixels" below 0.1 MP (where one
    decimal of MP would round to nothing)."""
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels:,} pixels"


def check_pixels(height: int, width: int, max_pixels: int, name: str, why: str = "") -> None:
    """Raise ImageTooLargeError if ``height`` x ``width`` is more than ``max_pixels``, or a side is
    longer than ``MAX_SIDE`` (what a .icmh header holds; checked before anything is coded)."""
    if max(height, width) > MAX_SIDE:
        side = "wide" if width > MAX_SIDE else "tall"
        raise ImageTooLargeError(f"{name}: {width}x{height} is too {side}: a side may have at most {MAX_SIDE} pixels "
                                 "(the .icmh format's limit); crop or resize it")
    pixels = height * width
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} is {pixel_count(pixels)}, more than the limit of {pixel_count(max_pixels)}"
            f"{why}; to go on anyway, raise it with --max-pixels {pixels} (max_pixels={pixels} in Python)"
        )


def pil_to_tensor(image: Image.Image, name: str = "image") -> tuple[torch.Tensor, ImageInfo]:
    """A PIL image (already upright) as a (1, 3, H, W) float32 tensor in [0, 1], with its ImageInfo."""
    mode, alpha = image.mode, False
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in image.info):
        alpha = True
        image = image.convert("LA" if mode in ("LA", "La") else "RGBA")
        mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ImageFileError(f"{name}: 32-bit integer pixel values outside 0..65535; convert it to 8 or 16 bit")
        gray, info = torch.from_numpy(array.astype(np.float32) / 65535.0), ImageInfo("L", 16)
    elif mode == "F":
        raise ImageFileError(f"{name}: floating-point images are not supported; convert it to 8 or 16 bit")
    elif mode in ("1", "L", "LA"):
        gray = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
        info = ImageInfo("L", 8, alpha)
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
        return _warn_alpha(tensor, ImageInfo("RGB", 8, alpha), name)
    return _warn_alpha(gray.expand(1, 3, *gray.shape).contiguous(), info, name)


def _warn_alpha(tensor: torch.Tensor, info: ImageInfo, name: str) -> tuple[torch.Tensor, ImageInfo]:
    if info.alpha_dropped:
        warnings.warn(f"{name}: the alpha channel is dropped (the codec codes colour only)", stacklevel=3)
    return tensor, info


def as_batch(image: torch.Tensor) -> torch.Tensor:
    """Check an image tensor ((3, H, W) or (1, 3, H, W), values in [0, 1]) and return it 4-D float."""
    if not isinstance(image, torch.Tensor):
        raise ImageFileError(f"expected an image tensor, a PIL image or a path, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3 or min(image.shape[2:]) < 1:
        raise ImageFileError(f"expected one RGB image of shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ImageFileError(f"expected float pixel values in [0, 1], got dtype {image.dtype}")
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ImageFileError("image values must be finite and in [0, 1]")
    return image.float()


def tensor_to_pil(image: torch.Tensor, info: ImageInfo = ImageInfo()) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1] as a PIL image in ``info``'s mode and depth."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.dim() == 4:
        image = image[0]
    if info.mode == "L":
        gray = image.mean(dim=0).numpy()
        if info.bits == 16:
            return Image.fromarray(np.round(gray * 65535).astype(np.uint16))
        return Image.fromarray(np.round(gray * 255).astype(np.uint8))
    rgb = np.round(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    return Image.fromarray(rgb)


def write_png(image: torch.Tensor, path: str | os.PathLike, info: ImageInfo = ImageInfo()) -> Path:
    """Write a PNG (atomically: a partial file is renamed into place)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        tensor_to_pil(image, info).save(temporary, format="PNG")
    return path
