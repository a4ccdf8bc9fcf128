"""The .icmh container: one coded image, self-describing, safe to parse from untrusted bytes.

Layout of version 2 (all integers big-endian, every length explicit; no pickle, no JSON):

    magic        4 bytes   b"ICMH"
    version      u8        2
    flags        u8        bit 0: base codec weights are pretrained (else the seeded random ones)
                           bit 1: layered (scalable coding: a base and an enhancement layer)
    adapter kind u8        0 none (human vision), 1 adapter file (sha256 of the file),
                           2 adapters known by their tensors (sha256 of names, shapes and values)
    codec        u8 length + UTF-8
    quality      u8
    task         u8 length + UTF-8 (empty for human vision)
    variant      u8 length + UTF-8 (the adapters' variant; empty for human vision)
    adapter id   32 bytes  (only when adapter kind is not 0)
    base digest  16 bytes  sha256 prefix of the base codec's state_dict (checked by the decoder)
    height, width, padded height, padded width   u32 each (padding is at the bottom and right)
    image mode   u8        0 RGB, 1 grayscale (coded as RGB, written back as grayscale)
    bit depth    u8        8 or 16 (of the source, so decoding can write the same depth)
    shape        tree      what the codec's compress() returned under "shape"
    crc32        u32       of every header byte before it
    layers, in order, until the end of the file, each:
        kind     u8        0 all (a single-layer file), 1 base, 2 enhancement
        length   u32       of the payload
        payload  tree      the layer's entropy-coded strings
        crc32    u32       of the layer's kind, length and payload

A single-layer file holds one "all" layer with compress()'s strings. A layered file holds the
base layer ([y strings of the base layer, z strings]) and then, optionally, the enhancement layer
([y strings of the rest]); the header and the base layer alone are themselves a valid file
(``strip``), so a prefix of the stream serves the machine task and the whole serves people.
Version 1 files (one CRC at the end, the strings between the header and the shape) still decode.

A tree is one tagged value: 0 bytes (u32 length + data), 1 list (u32 count + items),
2 int (u32), 3 dict (u32 count + (u8 key length + UTF-8 key + item)). That holds the strings and
shapes of every CompressAI layout (nested lists of byte strings; torch.Size, lists or dicts of
them as shapes) without knowing the model.

Checksums are checked before the bytes they cover are trusted, so a damaged file is rejected before
its payload reaches CompressAI's range decoder (which does not check its input). Every count and
size is bounded before anything is allocated, so parsing even a crafted file with valid checksums
gives a BitstreamError or a header that passes every range check, never a crash, a hang or a
huge allocation. What a parsed payload may then ask of the entropy decoder is bounded by
``icmh_hub.coding`` (layout against the header and codec, pixel limit) and
``icmh_hub.formats.rans`` (how far the decoder may read each string).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.identity import BASE_DIGEST_BYTES
from ..errors import BitstreamError, MissingFileError

MAGIC = b"ICMH"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
LAYER_KINDS = ("all", "base", "enhancement")
SUFFIX = ".icmh"
MODES = ("RGB", "L")
DEPTHS = (8, 16)
ADAPTER_KINDS = ("none", "file", "tensors")

MAX_FILE_BYTES = 1 << 30
MAX_NAME = 64  # codec and task names
MAX_SIDE = 1 << 16  # pixels per side
MAX_PIXELS = 1 << 28  # after padding
MAX_PAD = 1024  # padding per side: no codec needs a larger multiple
MAX_DEPTH = 8  # nesting of the strings and shape trees
MAX_INT = (1 << 32) - 1
LATENT_FACTOR = 8  # a shape may describe at most this many latent values per padded pixel

_BYTES, _LIST, _INT, _DICT = 0, 1, 2, 3
_PREFIX = struct.Struct(">4sB")
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides the payload: which codec, which adapters, which image."""

    codec: str
    quality: int
    task: str | None  # None: the human-vision codec (no adapters)
    adapter_kind: str  # one of ADAPTER_KINDS
    adapter_id: str | None  # hex sha256 (of the file, or of the tensors), None for "none"
    base_pretrained: bool
    base_digest: str  # hex, BASE_DIGEST_BYTES long
    height: int
    width: int
    padded_height: int
    padded_width: int
    mode: str = "RGB"
    bits: int = 8
    variant: str | None = None  # the adapters' variant (None for human vision, and in version 1 files)
    layered: bool = False  # scalable coding: a base and an enhancement layer
    layers: tuple[str, ...] = field(default=(), compare=False)  # which layers the file holds (set when reading)

    @property
    def pixels(self) -> int:
        """Pixels of the original image (the bpp denominator)."""
        return self.height * self.width

    def check(self) -> "Header":
        """Raise BitstreamError unless every field is in range (used when packing and unpacking)."""
        _require(0 < len(self.codec.encode()) <= MAX_NAME, f"codec name {self.codec!r} is empty or too long")
        _require(1 <= self.quality <= 255, f"quality {self.quality} is out of range")
        _require(self.adapter_kind in ADAPTER_KINDS, f"unknown adapter kind {self.adapter_kind!r}")
        _require((self.task is None) == (self.adapter_kind == "none"), "task and adapter kind disagree")
        if self.task is not None:
            _require(0 < len(self.task.encode()) <= MAX_NAME and self.task != "human", f"bad task name {self.task!r}")
            _require(_is_hex(self.adapter_id, 32), "adapter id is not a sha256")
        else:
            _require(self.adapter_id is None, "a human-vision header has no adapter id")
        _require(_is_hex(self.base_digest, BASE_DIGEST_BYTES), "base digest has the wrong length")
        _require(1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE, f"image size {self.height}x{self.width} is out of range")
        _require(
            0 <= self.padded_height - self.height <= MAX_PAD and 0 <= self.padded_width - self.width <= MAX_PAD,
            "padding is negative or too large",
        )
        _require(self.padded_height * self.padded_width <= MAX_PIXELS, "padded image is too large")
        _require(self.mode in MODES and self.bits in DEPTHS, f"unknown image mode {self.mode}/{self.bits} bit")
        _require(self.variant is None or (self.task is not None and 0 < len(self.variant.encode()) <= MAX_NAME),
                 f"bad adapter variant {self.variant!r}")
        _require(not self.layered or self.task is not None, "a layered file needs the adapters that split its layers")
        return self


def pack(header: Header, strings: Any, shape: Any) -> bytes:
    """The bytes of one .icmh file: ``header`` plus ``compress()``'s ``strings`` and ``shape``
    (for a layered header, ``strings`` are [base y, enhancement y (or None), z])."""
    header.check()
    out = bytearray(_PREFIX.pack(MAGIC, FORMAT_VERSION))
    out += struct.pack(">BB", int(header.base_pretrained) | (2 if header.layered else 0), ADAPTER_KINDS.index(header.adapter_kind))
    _put_name(out, header.codec)
    out += struct.pack(">B", header.quality)
    _put_name(out, header.task or "")
    _put_name(out, header.variant or "")
    if header.adapter_id is not None:
        out += bytes.fromhex(header.adapter_id)
    out += bytes.fromhex(header.base_digest)
    out += struct.pack(">IIII", header.height, header.width, header.padded_height, header.padded_width)
    out += struct.pack(">BB", MODES.index(header.mode), header.bits)
    _put_tree(out, shape, 0)
    _check_shape(shape, header)
    out += _CRC.pack(zlib.crc32(out))
    if header.layered:
        _require(isinstance(strings, (list, tuple)) and len(strings) == 3, "layered strings are [base y, enhancement y, z]")
        out += _layer("base", [strings[0], strings[2]])
        if strings[1] is not None:
            out += _layer("enhancement", [strings[1]])
    else:
        out += _layer("all", strings)
    return bytes(out)


def _layer(kind: str, strings: Any) -> bytes:
    payload = bytearray()
    _put_tree(payload, strings, 0)
    record = bytearray(struct.pack(">BI", LAYER_KINDS.index(kind), len(payload))) + payload
    return bytes(record + _CRC.pack(zlib.crc32(record)))


def unpack(data: bytes) -> tuple[Header, Any, Any]:
    """Parse and verify a .icmh file: (header, strings, shape). Any defect is a BitstreamError.
    For a layered file ``strings`` are [base y, enhancement y or None, z]."""
    header, layers, shape, _ = _parse(data)
    if not header.layered:
        return header, layers["all"], shape
    base = layers["base"]
    _require(isinstance(base, list) and len(base) == 2, "the base layer holds [y strings, z strings]")
    enhancement = layers.get("enhancement")
    _require(enhancement is None or (isinstance(enhancement, list) and len(enhancement) == 1),
             "the enhancement layer holds [y strings]")
    return header, [base[0], None if enhancement is None else enhancement[0], base[1]], shape


def strip(data: bytes, layer: str = "base") -> bytes:
    """A layered file cut down to its header and base layer, bytes as they were (no re-encoding)."""
    if layer != "base":
        raise BitstreamError(f"only the enhancement layer can be stripped (keeping --layer base), not {layer!r}")
    header, _, _, ends = _parse(data)
    if not header.layered:
        raise BitstreamError("this file has a single layer (it was not coded with a scalable variant); there is nothing to strip")
    return bytes(data[: ends["base"]])


def layer_bytes(data: bytes) -> dict[str, int]:
    """Bytes of each part of a file: "header", then "all", or "base" and "enhancement" (each
    with its length and checksum)."""
    _, _, _, ends = _parse(data)
    sizes, previous = {}, 0
    for part, end in ends.items():
        sizes[part] = end - previous
        previous = end
    return sizes


def _parse(data: bytes) -> tuple[Header, dict[str, Any], Any, dict[str, int]]:
    """(header, layer kind -> strings tree, shape, part -> end offset in ``data``; the parts are
    "header" and the layers, in file order)."""
    data = _prefix_checked(data)
    if data[len(MAGIC)] == 1:
        header, strings, shape, header_end = _unpack_version_1(data)
        return header, {"all": strings}, shape, {"header": header_end, "all": len(data)}
    reader = _Reader(memoryview(data), _PREFIX.size)
    fields = _header_fields(reader, FORMAT_VERSION)
    shape = reader.tree(0)
    (stored,) = reader.unpack(">I")
    if zlib.crc32(data[: reader.pos - _CRC.size]) != stored:
        raise BitstreamError("corrupted .icmh file (header checksum mismatch); the file was damaged after it was written")
    layers, ends = {}, {"header": reader.pos}
    while not reader.at_end():
        start = reader.pos
        layer, length = reader.unpack(">BI")
        _require(layer < len(LAYER_KINDS), f"unknown layer kind {layer}")
        _require(LAYER_KINDS[layer] not in layers, f"the {LAYER_KINDS[layer]} layer appears twice")
        _require(length + _CRC.size <= reader.remaining(), f"truncated {LAYER_KINDS[layer]} layer")
        payload = _Reader(memoryview(data)[reader.pos : reader.pos + length])
        reader.take(length)
        (stored,) = reader.unpack(">I")
        if zlib.crc32(data[start : reader.pos - _CRC.size]) != stored:
            raise BitstreamError(f"corrupted or truncated .icmh file ({LAYER_KINDS[layer]} layer checksum mismatch)")
        strings = payload.tree(0)
        _require(payload.at_end(), f"unexpected bytes in the {LAYER_KINDS[layer]} layer")
        layers[LAYER_KINDS[layer]] = strings
        ends[LAYER_KINDS[layer]] = reader.pos
    order = tuple(layers)
    expected = (("base",), ("base", "enhancement")) if fields["layered"] else (("all",),)
    _require(order in expected, f"layers {list(order) or 'none'} where the header announces {' or '.join(map(str, expected))}")
    header = Header(**fields, layers=order).check()
    _check_shape(shape, header)
    return header, layers, shape, ends


def _unpack_version_1(data: bytes) -> tuple[Header, Any, Any, int]:
    """A version 1 file: one checksum at the end, the strings before the shape. (header, strings,
    shape, where the header ends)."""
    (stored,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != stored:
        raise BitstreamError("corrupted or truncated .icmh file (checksum mismatch); the file was damaged after it was written")
    reader = _Reader(memoryview(data)[: -_CRC.size], _PREFIX.size)
    header = Header(**_header_fields(reader, 1), layers=("all",)).check()
    header_end = reader.pos
    strings = reader.tree(0)
    shape = reader.tree(0)
    _require(reader.at_end(), "unexpected bytes after the payload")
    _check_shape(shape, header)
    return header, strings, shape, header_end


def _header_fields(reader: "_Reader", version: int) -> dict[str, Any]:
    """The header's fields up to the sizes and image mode, as Header's keywords (version 1 has
    no variant and no layered flag)."""
    flags, kind = reader.unpack(">BB")
    _require(flags < (4 if version >= 2 else 2), "unknown flags")
    _require(kind < len(ADAPTER_KINDS), f"unknown adapter kind {kind}")
    codec = reader.name()
    (quality,) = reader.unpack(">B")
    task = reader.name() or None
    variant = (reader.name() or None) if version >= 2 else None
    adapter_id = reader.take(32).hex() if kind else None
    base_digest = reader.take(BASE_DIGEST_BYTES).hex()
    height, width, padded_height, padded_width = reader.unpack(">IIII")
    mode, bits = reader.unpack(">BB")
    _require(mode < len(MODES), f"unknown image mode {mode}")
    return {
        "codec": codec, "quality": quality, "task": task, "adapter_kind": ADAPTER_KINDS[kind], "adapter_id": adapter_id,
        "base_pretrained": bool(flags & 1), "base_digest": base_digest, "height": height, "width": width,
        "padded_height": padded_height, "padded_width": padded_width, "mode": MODES[mode], "bits": bits,
        "variant": variant, "layered": bool(flags & 2),
    }


def read_bitstream(path: str | os.PathLike) -> bytes:
    """The bytes of a .icmh file, refusing directories and absurdly large files before reading."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such .icmh file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BitstreamError(f"{path}: {path.stat().st_size} bytes is too large for a .icmh file")
    return path.read_bytes()


def read_header(data: bytes) -> Header:
    """Only the header (the whole file is still verified)."""
    return unpack(data)[0]


# -- internals ---------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BitstreamError(f"damaged .icmh file: {message}")


def _is_hex(value: str | None, num_bytes: int) -> bool:
    if not isinstance(value, str) or len(value) != 2 * num_bytes:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _prefix_checked(data: bytes) -> bytes:
    """``data`` as bytes, after checking its type, magic and version."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected the bytes of a .icmh file, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BitstreamError("empty file: not a .icmh bitstream")
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise BitstreamError("not a .icmh bitstream (wrong magic bytes); give a file written by `icmh-hub compress`")
    if len(data) < _PREFIX.size + _CRC.size:
        raise BitstreamError("truncated .icmh file (shorter than its fixed header)")
    version = data[len(MAGIC)]
    if version > FORMAT_VERSION:
        raise BitstreamError(
            f".icmh format version {version} is newer than this icmh-hub reads ({FORMAT_VERSION}); "
            "upgrade icmh-hub (in its clone: git pull, then pip install -e .)"
        )
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"unknown .icmh format version {version}; this icmh-hub reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    return data


def _put_name(out: bytearray, name: str) -> None:
    raw = name.encode()
    out += struct.pack(">B", len(raw)) + raw


def _put_tree(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BitstreamError("compress() output is nested too deeply to store")
    if isinstance(value, (bytes, bytearray)):
        out += struct.pack(">BI", _BYTES, len(value)) + bytes(value)
    elif isinstance(value, bool):
        raise BitstreamError("compress() output holds a bool; only bytes, ints, lists and dicts are stored")
    elif isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        number = int(value.__index__())
        if not 0 <= number <= MAX_INT:
            raise BitstreamError(f"compress() output holds the int {number}, outside 0..2**32-1")
        out += struct.pack(">BI", _INT, number)
    elif isinstance(value, (list, tuple)):
        out += struct.pack(">BI", _LIST, len(value))
        for item in value:
            _put_tree(out, item, depth + 1)
    elif isinstance(value, dict):
        out += struct.pack(">BI", _DICT, len(value))
        for key, item in value.items():
            if not isinstance(key, str) or not 0 < len(key.encode()) <= MAX_NAME:
                raise BitstreamError(f"compress() output has a dict key {key!r} that cannot be stored")
            _put_name(out, key)
            _put_tree(out, item, depth + 1)
    else:
        raise BitstreamError(f"compress() output holds a {type(value).__name__}; only bytes, ints, lists and dicts are stored")


def _check_shape(shape: Any, header: Header) -> None:
    """Bound the latent sizes a shape asks the decoder to allocate by the padded image size."""
    limit = LATENT_FACTOR * header.padded_height * header.padded_width
    for dims in shape_dims(shape):
        size = 1
        for dim in dims:
            size *= dim
        _require(size <= limit, f"latent shape {tuple(dims)} is too large for a {header.padded_height}x{header.padded_width} image")


def shape_dims(value: Any) -> Iterator[list[int]]:
    """Every list of ints inside a shape tree (a bare int counts as a list of one)."""
    if isinstance(value, int):
        yield [value]
    elif isinstance(value, (list, tuple)):
        if all(isinstance(v, int) for v in value):
            yield list(value)
        else:
            for item in value:
                yield from shape_dims(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from shape_dims(item)


class _Reader:
    """Reads from a memoryview; running past the end is a BitstreamError, never an IndexError."""

    def __init__(self, view: memoryview, pos: int = 0) -> None:
        self.view, self.pos = view, pos

    def remaining(self) -> int:
        return len(self.view) - self.pos

    def at_end(self) -> bool:
        return self.pos == len(self.view)

    def take(self, size: int) -> bytes:
        _require(size <= self.remaining(), "truncated field")
        chunk = bytes(self.view[self.pos : self.pos + size])
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def name(self) -> str:
        (length,) = self.unpack(">B")
        _require(length <= MAX_NAME, "name too long")
        try:
            return self.take(length).decode()
        except UnicodeDecodeError:
            raise BitstreamError("damaged .icmh file: a name is not valid UTF-8") from None

    def tree(self, depth: int) -> Any:
        _require(depth <= MAX_DEPTH, "payload nested too deeply")
        tag, number = self.unpack(">BI")
        if tag == _BYTES:
            return self.take(number)
        if tag == _INT:
            return number
        # every item needs at least 5 bytes, so a count can never make us loop past the data
        _require(tag in (_LIST, _DICT) and number * 5 <= self.remaining(), "bad payload structure")
        if tag == _LIST:
            items = [self.tree(depth + 1) for _ in range(number)]
            return tuple(items) if items and all(isinstance(i, int) for i in items) else items
        result = {}
        for _ in range(number):
            key = self.name()
            _require(key and key not in result, "bad payload key")
            result[key] = self.tree(depth + 1)
        return result
