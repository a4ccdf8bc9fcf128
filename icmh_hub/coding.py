"""Coding images: the one in-memory coder (``code``) and .icmh files (``encode`` / ``decode``).

``code`` pads a batch of images (the one padding policy, ``icmh_hub.core.padding``), entropy-codes
it with ``compress()``, decodes it with ``decompress()`` and crops back: evaluation, the demo and
the benchmarks measure rates and accuracies through it, on the same bytes ``icmh-hub compress``
writes.

``encode`` / ``decode`` wrap the same steps in the .icmh container, finding the codec and
adapters by themselves (``icmh_hub.assemble`` resolves what a header names). With a layered
method (``scalable-sfma`` / ``scalable-mask``) the file has two layers: decoding its base layer gives the machine picture, both layers the human one (the
base codec's decode, bit for bit); ``strip`` cuts a file down to its base layer.

Untrusted files cannot drive the decoder out of bounds: the header's image size is held to the
pixel limit, the payload must be laid out as the codec lays out one image of that size (one
string per latent, latent grids at the strides the codec's spec declares), and the entropy decoder
reads every string with the zero padding that bounds how far it can read
(``icmh_hub.formats.rans``). A crafted file is refused with one error or decodes to a wrong
picture. The encoder refuses latents and scales the entropy coder cannot take (NaN, infinities,
values it would loop on), and both sides refuse a reconstruction that is not finite.

Pixel limits: coding takes memory in proportion to the pixels (``benchmarks.memory`` measures
it per codec family), so ``Encoder`` and ``Decoder`` refuse, before allocating, an image larger
than what fits in ``MEMORY_BUDGET_MB`` (``pixel_limit``); ``max_pixels`` sets another limit.
Above it the Encoder codes the image in tiles (``icmh_hub.tiling``, format version 3), which the
Decoder decodes tile by tile: then each tile is held to the limit, and the image to what the
budget leaves beside one tile (``tiled_pixel_limit``).

The encoder records which base weights (pretrained or icmh-hub's seeded random ones, plus a digest
of them) and which adapters (sha256 of the adapter file, or of the tensors for adapters that never
were a file) it used. The decoder rebuilds exactly that: the random codec from the same seed, an
adapter file given by the caller (checked against the sha256), or the registry entry with that
sha256; anything that does not match is refused rather than decoded into a wrong image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .assemble import AdapterArg, adapter_set, adapters_for_bitstream, build_base, codec_for_bitstream, task_adapters
from .core.adapter_set import AdapterSet
from .core.attach import AdaptedCodec
from .core.identity import adapters_digest, base_digest
from .core.methods import DEFAULT_METHOD
from .core.padding import crop, pad, padded_size
from .core.rate import estimated_bits, string_bytes
from .core.scalable import LAYERS
from .core.spec import SCALABLE_CODINGS, CodecSpec, get_codec
from .core.tasks import HUMAN
from .errors import BitstreamError, IcmhError, InvalidArgumentError, NumericalError
from .formats.bitstream import MAX_PIXELS, Header, layer_bytes, pack_tiles, read_bitstream, shape_dims, unpack_tiles
from .formats.images import ImageInfo, as_batch, check_pixels, pil_to_tensor, read_image
from .formats.rans import bounded_decoding, checked_encoding
from .hub.index import IndexSpec
from .tiling import Tiling, code_tiles, decode_tiles, image_limit

MAX_LATENTS = 64  # latent strings per file (ELIC has 11)
KEPT_CODECS = 2  # codecs a Decoder keeps between files (the least recently built go first)

MEMORY_BUDGET_MB = 8000
FIXED_MB = 1200  # Python, torch and a codec's weights: the most benchmarks.memory measured, rounded up
SAFETY = 1.15  # the line through 0.5 and 1 MP fell short of the peak at 2 MP by up to 5.5%
_PAYLOAD_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, KeyError, OverflowError, AssertionError, AttributeError)


def memory_per_megapixel(codec: str) -> int:
    """MB per megapixel that coding with ``codec`` takes (its spec's ``memory_per_megapixel``)."""
    return get_codec(codec).memory_per_megapixel


def pixel_limit(codec: str) -> int:
    """The most pixels ``codec`` codes within ``MEMORY_BUDGET_MB`` (what --max-pixels defaults to)."""
    return int((MEMORY_BUDGET_MB - FIXED_MB) / (SAFETY * memory_per_megapixel(codec)) * 1e6)


def tiled_pixel_limit(codec: str, tile_pixels: int) -> int:
    """The most pixels of an image ``codec`` codes in tiles of ``tile_pixels`` within
    ``MEMORY_BUDGET_MB``: what the codec and one tile's coding leave, for the image's own pixels."""
    tile_mb = SAFETY * memory_per_megapixel(codec) * tile_pixels / 1e6
    return min(MAX_PIXELS, image_limit(MEMORY_BUDGET_MB - FIXED_MB - tile_mb))


def _limit(codec: str, max_pixels: int | None) -> tuple[int, str]:
    """(pixel limit, what it protects) for ``max_pixels`` or the codec's default."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise InvalidArgumentError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        return max_pixels, ""
    return pixel_limit(codec), (
        f" that {codec} codes within {MEMORY_BUDGET_MB / 1000:.0f} GB of memory (about {memory_per_megapixel(codec)} MB per MP)"
    )


# -- the in-memory coder -----------------------------------------------------------------------


@dataclass(frozen=True)
class Coded:
    """A batch through the codec: reconstructions (cropped, in [0, 1]), ``compress()``'s strings,
    and per image the bits of its strings and the likelihood estimate (each ``None`` when not
    asked for). For a scalable task, ``x_hat`` and ``bits`` are the base layer's (the machine
    picture), ``x_full`` and ``bits_full`` the whole stream's (the human picture)."""

    x_hat: torch.Tensor
    strings: Any
    bits: list[int] | None
    bits_est: list[float] | None
    pixels: int  # per image, unpadded
    x_full: torch.Tensor | None = None
    bits_full: list[int] | None = None

    @property
    def bpp(self) -> float:
        """Bits per pixel of the strings, over the whole batch."""
        return sum(self.bits) / (self.pixels * len(self.bits))

    @property
    def bpp_est(self) -> float:
        return sum(self.bits_est) / (self.pixels * len(self.bits_est))

    @property
    def bpp_full(self) -> float | None:
        """Bits per pixel of both layers (None unless the task is scalable)."""
        return None if self.bits_full is None else sum(self.bits_full) / (self.pixels * len(self.bits_full))


def _per_image_bytes(strings: Any, count: int) -> list[int]:
    """Bytes of each image's strings in CompressAI's layout (a list per latent, one item per image)."""
    return [sum(string_bytes(per_latent[i]) for per_latent in strings) for i in range(count)]


@torch.no_grad()
def code(codec: AdaptedCodec, images: torch.Tensor, bitstream: bool = True, estimate: bool = True) -> Coded:
    """Code (B, 3, H, W) images in [0, 1] with ``codec`` as it is set now (its task, or human).

    ``bitstream``: really entropy-code and decode (the reconstruction is the decoded one);
    otherwise the forward pass's rounded reconstruction. ``estimate``: also the likelihoods'
    bits. Both rates count the H x W pixels, not the padding. A scalable task codes in two layers
    and decodes both (see ``Coded``).
    """
    height, width = images.shape[-2:]
    padded = pad(images, get_codec(codec.codec).pad_multiple)
    bits_est = bits = strings = x_full = bits_full = None
    x_hat = None
    cause = "the codec's weights or adapters hold non-finite values"
    with checked_encoding(codec.base):
        if estimate or not bitstream:
            out = codec(padded)
            bits_est = [float(b) for b in estimated_bits(out["likelihoods"])]
            x_hat = out["x_hat"]
        if bitstream:
            compressed = codec.compress(padded)
            strings, shape = compressed["strings"], compressed["shape"]
            layered = codec.layered
            bits = [8 * n for n in _per_image_bytes([strings[0], strings[2]] if layered else strings, len(images))]
            x_hat = codec.decompress(strings, shape)["x_hat"]
            if layered:
                bits_full = [8 * n for n in _per_image_bytes(strings, len(images))]
                full = codec.decompress(strings, shape, layer="full")["x_hat"]
                _check_finite(full, cause)
                x_full = crop(full, height, width).clamp(0, 1)
    _check_finite(x_hat, cause)
    return Coded(crop(x_hat, height, width).clamp(0, 1), strings, bits, bits_est, height * width, x_full, bits_full)


def _check_finite(x_hat: torch.Tensor, cause: str) -> None:
    """A reconstruction with NaN or infinite pixels is an error (a PNG would show it black)."""
    if not torch.isfinite(x_hat).all():
        raise NumericalError(f"the reconstruction holds NaN or infinite pixels: {cause}")


# -- identities --------------------------------------------------------------------------------


_RANDOM_BASE_DIGESTS: dict[tuple[str, int], str] = {}


def random_base_digest(codec: str, quality: int) -> str:
    """Digest of the seeded random base codec that ``load(..., pretrained=False)`` builds."""
    key = (codec, quality)
    if key not in _RANDOM_BASE_DIGESTS:
        _RANDOM_BASE_DIGESTS[key] = base_digest(build_base(codec, quality, pretrained=False))
    return _RANDOM_BASE_DIGESTS[key]


def adapter_identity(adapters: AdapterSet | None) -> tuple[str, str | None]:
    """(adapter kind, id) as the header stores them."""
    if adapters is None:
        return "none", None
    if adapters.sha256:
        return "file", adapters.sha256
    return "tensors", adapters_digest(adapters)


# -- encoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One coded image: the file's bytes, its header, and the size of the entropy-coded strings."""

    data: bytes
    header: Header
    string_bytes: int

    @property
    def layer_bytes(self) -> dict[str, int]:
        """Bytes of the file's parts: "header", then "all", or "base" and "enhancement"."""
        return layer_bytes(self.data)

    @property
    def bpp(self) -> float:
        """Bits per (original) pixel of the whole file, header included."""
        return len(self.data) * 8 / self.header.pixels

    @property
    def strings_bpp(self) -> float:
        """Bits per pixel of the entropy-coded strings alone (what papers call actual bpp)."""
        return self.string_bytes * 8 / self.header.pixels


class Encoder:
    """Encodes images with one AdaptedCodec; the codec's identity is computed once.

    ``pretrained=None`` finds out whether the base weights are icmh-hub's seeded random ones by
    comparing digests; say it explicitly to skip that (it builds a random codec once).
    ``max_pixels``: the most pixels coded at once. ``tile``: None codes larger images in tiles
    (``icmh_hub.tiling``), a side (a multiple of the codec's pad multiple) tiles every image
    with a longer side, False never tiles (larger images are refused). ``workers``: processes
    that code tiles in parallel (the same bytes; each holds its own tile's memory).
    """

    def __init__(self, codec: AdaptedCodec, pretrained: bool | None = None, max_pixels: int | None = None,
                 tile: int | bool | None = None, workers: int = 1) -> None:
        if not isinstance(codec, AdaptedCodec):
            raise InvalidArgumentError(
                f"encode() takes an AdaptedCodec (icmh_hub.load(...) or icmh_hub.attach(...)), got {type(codec).__name__}"
            )
        self.codec = codec
        self.spec: CodecSpec = get_codec(codec.codec)
        self.base_digest = base_digest(codec.base)
        if pretrained is None:
            pretrained = self.base_digest != random_base_digest(codec.codec, codec.quality)
        self.pretrained = bool(pretrained)
        self.adapter_kind, self.adapter_id = adapter_identity(codec.adapters)
        self.max_pixels, self.limit_reason = _limit(codec.codec, max_pixels)
        self.tiling = Tiling(tile, self.max_pixels, self.spec.pad_multiple)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidArgumentError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.image_limit, self.image_reason = self.max_pixels, self.limit_reason  # the most pixels read
        if self.tiling.side is not False:
            self.image_limit = max(self.max_pixels, tiled_pixel_limit(codec.codec, self.tiling.tile_pixels))
            self.image_reason = f" that {codec.codec} codes in tiles within {MEMORY_BUDGET_MB / 1000:.0f} GB of memory"

    def encode(self, image: Any, info: ImageInfo | None = None) -> Encoded:
        """Code ``image`` (tensor in [0, 1], PIL image or path) into a .icmh file's bytes, in
        tiles when it is larger than ``max_pixels`` (see ``tile``). An image of more than
        ``image_limit`` pixels is refused before it is read."""
        x, read_info = _as_tensor(image, self.image_limit, self.image_reason)
        info = info or read_info
        height, width = x.shape[-2:]
        tile = self.tiling.grid(height, width)
        if tile is None:
            check_pixels(height, width, self.max_pixels, "the image", self.limit_reason)
        header = Header(
            codec=self.codec.codec, quality=self.codec.quality, task=self.codec.task,
            adapter_kind=self.adapter_kind, adapter_id=self.adapter_id,
            base_pretrained=self.pretrained, base_digest=self.base_digest,
            height=height, width=width, **dict(zip(("padded_height", "padded_width"), padded_size(height, width, self.spec.pad_multiple))),
            mode=info.mode, bits=info.bits,
            variant=None if self.codec.adapters is None else self.codec.adapters.method,
            method=DEFAULT_METHOD if self.codec.adapters is None else self.codec.adapters.method,
            layered=self.codec.layered, tile=tile,
        )
        parts = code_tiles(self._code, x, header, self.workers) if tile else [self._code(x)]
        return Encoded(pack_tiles(header, parts), header, sum(string_bytes(strings) for strings, _ in parts))

    def _code(self, x: torch.Tensor) -> tuple[Any, Any]:
        """(strings, shape) of one image or tile, padded to the codec's multiple."""
        padded = pad(x, self.spec.pad_multiple)
        reference = next(self.codec.base.parameters(), None)
        if reference is not None:
            padded = padded.to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad(), checked_encoding(self.codec.base):
            out = self.codec.compress(padded)
        return out["strings"], out["shape"]


def _as_tensor(image: Any, max_pixels: int, why: str) -> tuple[torch.Tensor, ImageInfo]:
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels, why)
    if isinstance(image, Image.Image):
        check_pixels(image.height, image.width, max_pixels, "the image", why)
        return pil_to_tensor(image)
    tensor = as_batch(image)
    check_pixels(*tensor.shape[-2:], max_pixels, "the image", why)
    return tensor, ImageInfo()


def encode(codec: AdaptedCodec, image: Any, *, pretrained: bool | None = None) -> bytes:
    """The bytes of a .icmh file for ``image`` coded by ``codec`` with its active task (or none)."""
    return Encoder(codec, pretrained).encode(image).data


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A decoded image (1, 3, H, W) in [0, 1] at its original size, the header, and how to save it."""

    image: torch.Tensor
    header: Header
    layer: str | None = None  # of a layered file: "base" (machine picture) or "full" (human)

    @property
    def info(self) -> ImageInfo:
        return ImageInfo(self.header.mode, self.header.bits)


class Decoder:
    """Decodes .icmh files, keeping the codecs and adapters it built for the next file.

    ``adapter``: an adapter file (or AdapterSet) to use instead of the registry; it must be the
    one the file was coded with. ``force_task``: decode with another task's adapters, or "human"
    for none, on purpose (a file coded for one purpose is otherwise only decoded for it).
    ``codecs``: AdaptedCodecs already in memory (e.g. a base codec you trained, with its
    adapters); one is used when its base weights and adapters are the ones a header names.
    """

    def __init__(
        self,
        adapter: AdapterArg = None,
        force_task: str | None = None,
        device: str | torch.device = "cpu",
        codecs: Iterable[AdaptedCodec] = (),
        index: IndexSpec = None,
        max_pixels: int | None = None,
    ) -> None:
        self.adapter, self.force_task, self.device, self.index = adapter, force_task, torch.device(device), index
        self.max_pixels = max_pixels
        self._given: AdapterSet | None = None
        self._codecs = {(c.codec, c.quality, base_digest(c.base)): c for c in codecs}
        self._lent = {id(c) for c in self._codecs.values()}  # the caller's: leave them as they were
        self._adapters: dict[tuple[str, str, int, str], AdapterSet] = {}

    def decode(self, data: bytes | str | os.PathLike, layer: str | None = None) -> Decoded:
        """Decode one file. ``layer`` (layered files only): "base" for the machine picture, "full"
        for the human one; by default the fullest the file holds."""
        if isinstance(data, (str, os.PathLike)):
            data = read_bitstream(data)
        header, parts = unpack_tiles(data)
        if header.tile is None:
            return self._decode_part(*parts[0], layer)
        spec = _spec_for(header)
        why = f" that {spec.name} decodes in tiles of {header.tile[1]}x{header.tile[0]} within {MEMORY_BUDGET_MB / 1000:.0f} GB of memory"
        check_pixels(header.height, header.width, tiled_pixel_limit(spec.name, header.tile[0] * header.tile[1]), "the coded image", why)
        image = decode_tiles(lambda *part: self._decode_part(*part, layer).image, header, parts)
        return Decoded(image, header, _layer_options(header, layer, self.force_task).get("layer"))

    def _decode_part(self, header: Header, strings: Any, shape: Any, layer: str | None) -> Decoded:
        """Decode an untiled file's payload, or one tile's (``header`` is then the tile's)."""
        spec = _spec_for(header)
        limit, why = _limit(spec.name, self.max_pixels)
        check_pixels(header.height, header.width, limit, "the coded image", why)
        _check_payload(spec, header, strings, shape)
        options = _layer_options(header, layer, self.force_task)
        task = self._task_for(header)
        codec = self._codec_for(header)
        key, added = None, False
        if task is not None:
            adapters = self._adapters_for(header, task, codec)
            if header.layered != adapters.layered:
                raise BitstreamError(
                    f"this file is {'layered' if header.layered else 'single-layer'} but its adapters "
                    f"({adapters.method}) code {'one layer' if header.layered else 'two layers'}; the file is damaged"
                )
            key = next((name for name, held in codec.adapter_sets.items() if held is adapters), None)
            if key is None:
                key, added = f"{task}@{adapter_identity(adapters)[1][:16]}", True
                codec.add_adapters(key, adapters)
        try:
            with codec.using(key), torch.no_grad(), bounded_decoding(codec.base):
                x_hat = codec.decompress(strings, shape, **options)["x_hat"]
        except IcmhError:
            raise
        except _PAYLOAD_ERRORS as exc:
            raise BitstreamError(
                f"the payload does not decode with {spec.name} q{header.quality} ({type(exc).__name__}); the file is damaged"
            ) from None
        finally:
            if added and id(codec) in self._lent:
                codec.remove_adapters(key)
        expected = (1, 3, header.padded_height, header.padded_width)
        if tuple(x_hat.shape) != expected:
            raise BitstreamError(f"the payload decodes to shape {tuple(x_hat.shape)}, the header says {expected}; the file is damaged")
        _check_finite(x_hat, "the file is damaged, or the codec's weights or adapters hold non-finite values")
        return Decoded(crop(x_hat, header.height, header.width).clamp(0, 1).cpu(), header, options.get("layer"))

    # -- which task, codec and adapters ---------------------------------------------------------
    def _task_for(self, header: Header) -> str | None:
        if self.force_task is None:
            if header.task is None and self.adapter is not None:
                raise BitstreamError(
                    "this file was coded for human vision (no adapters) but an adapter was given; "
                    "drop the adapter, or pass --force-task TASK / force_task=TASK to decode it with adapters anyway"
                )
            return header.task
        return None if self.force_task == HUMAN else self.force_task

    def _codec_for(self, header: Header) -> AdaptedCodec:
        key = (header.codec, header.quality, header.base_digest)
        if key not in self._codecs:
            codec = codec_for_bitstream(header.codec, header.quality, header.base_pretrained, header.base_digest, self.index)
            self._forget_codecs()
            self._codecs[key] = codec.to(self.device)
        return self._codecs[key]

    def _forget_codecs(self) -> None:
        """Keep at most KEPT_CODECS codecs built here (the caller's stay): a batch of files naming
        many codecs and qualities holds a few, not all of them, in memory."""
        built = [key for key, codec in self._codecs.items() if id(codec) not in self._lent]
        for key in built[: max(0, len(built) - KEPT_CODECS + 1)]:
            del self._codecs[key]
            self._adapters = {k: a for k, a in self._adapters.items() if (k[0], k[2]) != key[:2]}  # (codec, quality)

    def _adapters_for(self, header: Header, task: str, codec: AdaptedCodec) -> AdapterSet:
        given = self._given_adapters()
        if task != header.task:  # forced on purpose: no identity to check against
            return given or self._cached(header, task, "", lambda: task_adapters(header.codec, header.quality, task, header.base_pretrained, self.index))
        held = (s for s in codec.adapter_sets.values() if self._identity_for(s, header.adapter_kind) == header.adapter_id)
        adapters = given or next(held, None)
        adapters = adapters or self._cached(header, task, header.adapter_id, lambda: adapters_for_bitstream(
            header.codec, header.quality, task, header.variant, header.adapter_kind, header.adapter_id, header.base_pretrained, self.index))
        found = self._identity_for(adapters, header.adapter_kind)
        if found != header.adapter_id:
            what = f"the adapter {self.adapter}" if isinstance(self.adapter, (str, os.PathLike)) else "the adapters found"
            raise BitstreamError(
                f"{what} (id {str(found)[:12]}) is not the one this file was coded with "
                f"(sha256 {header.adapter_id[:12]}, task {header.task}); give the matching adapter file, "
                "or --force-task human to decode for human vision without adapters"
            )
        return adapters

    def _cached(self, header: Header, task: str, ident: str, build) -> AdapterSet:
        key = (header.codec, task, header.quality, ident or f"default-{header.base_pretrained}")
        if key not in self._adapters:
            self._adapters[key] = build()
        return self._adapters[key]

    def _given_adapters(self) -> AdapterSet | None:
        if self.adapter is not None and self._given is None:
            self._given = adapter_set(self.adapter)
        return self._given

    @staticmethod
    def _identity_for(adapters: AdapterSet, kind: str) -> str | None:
        if kind == "file":
            return adapters.sha256
        return adapters_digest(adapters)


def _layer_options(header: Header, layer: str | None, force_task: str | None) -> dict[str, str]:
    """The keyword arguments of ``decompress`` for the ``layer`` asked of this file."""
    if not header.layered:
        if layer not in (None, "full"):
            raise InvalidArgumentError(
                f"--layer {layer}: this file has a single layer (coded without a scalable variant); decode it without --layer"
            )
        return {}
    if force_task is not None:
        raise InvalidArgumentError(
            "a layered file is decoded with the adapters it was coded with (their mask splits the layers); "
            "drop --force-task, and give --layer full for the human picture"
        )
    whole = "enhancement" in header.layers
    layer = layer or ("full" if whole else "base")
    if layer not in LAYERS:
        raise InvalidArgumentError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if layer == "full" and not whole:
        raise InvalidArgumentError(
            "--layer full: this file holds the base layer only (its enhancement layer was stripped), "
            "so only the machine picture can be decoded; decode it without --layer, or use the unstripped file"
        )
    return {"layer": layer}


def _spec_for(header: Header) -> CodecSpec:
    try:
        spec = get_codec(header.codec)
    except KeyError:
        raise BitstreamError(
            f"this file was coded with codec {header.codec!r}, which this icmh-hub does not know; "
            "upgrade icmh-hub or register that codec"
        ) from None
    if header.quality not in spec.channels:
        raise BitstreamError(f"this file names {spec.name} quality {header.quality}, which does not exist; the file is damaged")
    if (header.padded_height, header.padded_width) != padded_size(header.height, header.width, spec.pad_multiple):
        raise BitstreamError(f"the padding in this file does not fit {spec.name}; the file is damaged")
    return spec


def _check_payload(spec: CodecSpec, header: Header, strings: Any, shape: Any) -> None:
    """The payload must be laid out as ``compress()`` lays out one image of the header's padded
    size: a list of latents, each a list of one string (batch 1), and latent shapes whose last
    two dimensions are one of the latent grids the spec declares (``latent_strides``: y at 1/16
    of the padded size, z at 1/64, for every built-in codec). A layered file's payload is [base y,
    enhancement y (None when stripped), z], each but None one string."""
    if header.layered:
        if spec.latent_coding not in SCALABLE_CODINGS:
            raise BitstreamError(f"damaged .icmh file: {header.codec} files cannot be layered")
        strings = [s for s in strings if s is not None] if isinstance(strings, list) and len(strings) == 3 else None
    one_image = isinstance(strings, list) and 0 < len(strings) <= MAX_LATENTS and all(
        isinstance(latent, list) and len(latent) == 1 and isinstance(latent[0], bytes) for latent in strings
    )
    if not one_image:
        raise BitstreamError("damaged .icmh file: the payload is not one latent string per latent for one image")
    grids = {(header.padded_height // stride, header.padded_width // stride) for stride in spec.latent_strides}
    dims = list(shape_dims(shape))
    if not dims or any(len(d) < 2 or tuple(d[-2:]) not in grids for d in dims):
        raise BitstreamError(
            f"damaged .icmh file: the latent shapes {dims[:4]} do not fit a "
            f"{header.padded_width}x{header.padded_height} (padded) image coded with {spec.name}"
        )


def decode(
    data: bytes | str | os.PathLike,
    adapter: AdapterArg = None,
    *,
    force_task: str | None = None,
    codecs: Iterable[AdaptedCodec] = (),
    index: IndexSpec = None,
    layer: str | None = None,
) -> torch.Tensor:
    """Decode a .icmh file (its bytes or its path) to a (1, 3, H, W) tensor in [0, 1] at the
    original size, with the codec and adapters its header names (see Decoder). ``layer`` picks
    the base (machine) or full (human) picture of a layered file."""
    return Decoder(adapter, force_task, codecs=codecs, index=index).decode(data, layer).image
