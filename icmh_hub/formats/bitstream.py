"""The .icmh container: one coded image, self-describing, safe to parse from untrusted bytes.

Layout of version 3 (all integers big-endian, every length explicit; no pickle, no JSON):

    magic        4 bytes   b"ICMH"
    version      u8        3
    flags        u8        bit 0: base codec weights are pretrained (else the seeded random ones)
                           bit 1: layered (scalable coding: a base and an enhancement layer)
                           bit 2: tiled (the image is coded as independent tiles)
    adapter kind u8        0 none (human vision), 1 adapter file (sha256 of the file),
                           2 adapters known by their tensors (sha256 of names, shapes and values)
    codec        u8 length + ASCII name
    quality      u8
    task         u8 length + ASCII name (empty for human vision)
    variant      u8 length + ASCII name (the adapters' variant; empty for human vision)
    method       u8 length + ASCII name (the adaptation method; "sfma")
    adapter id   32 bytes  (only when adapter kind is not 0)
    base digest  16 bytes  sha256 prefix of the base codec's state_dict (checked by the decoder)
    height, width, padded height, padded width   u32 each (padding is at the bottom and right)
    image mode   u8        0 RGB, 1 grayscale (coded as RGB, written back as grayscale)
    bit depth    u8        8 or 16 (of the source, so decoding can write the same depth)
    tile size    u32 x 2   height and width of a tile (only when tiled); tiles run row by row,
                           the last row and column hold what is left, the padding is the last ones'
    shape        tree      what the codec's compress() returned under "shape" (tiled: a list of
                           one such shape per tile)
    crc32        u32       of every header byte before it
    layers, in order, until the end of the file, each:
        kind     u8        0 all (a single-layer file), 1 base, 2 enhancement
        tile     u32       which tile (0 when not tiled)
        length   u32       of the payload
        bound    16 bytes  sha256 prefix of every byte of the file before this record
        payload  tree      the layer's entropy-coded strings
        crc32    u32       of the record's bytes before it

A single-layer file holds one "all" layer with compress()'s strings. A layered file holds the
base layer ([y strings of the base layer, z strings]) and then, optionally, the enhancement layer
([y strings of the rest]); the header and the base layer alone are themselves a valid file
(``strip``), so a prefix of the stream serves the machine task and the whole serves people. A
tiled file holds the layers of tile 0, 1, ... in turn: all its base layers first, then all its
enhancement layers, so stripping stays a cut. Each record's bound ties it to the header and the
records before it: a layer spliced from another file (another image, another task) is refused.

Names (codec, task, variant, method) are ``[A-Za-z0-9._+-]``, 1 to 64 characters, not starting
with "." and without ".."; a file with any other name is refused and the name is shown escaped.
Version 2 (no method, no tiles, records without tile and bound) and version 1 (one CRC at the
end, the strings between the header and the shape) files still decode.

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

import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.identity import BASE_DIGEST_BYTES
from ..core.names import MAX_NAME_LENGTH, NAME_RULE, is_method_name, is_name
from ..errors import BitstreamError, MissingFileError

MAGIC = b"ICMH"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
LAYER_KINDS = ("all", "base", "enhancement")
SUFFIX = ".icmh"
MODES = ("RGB", "L")
DEPTHS = (8, 16)
ADAPTER_KINDS = ("none", "file", "tensors")

MAX_FILE_BYTES = 1 << 30
MAX_NAME = MAX_NAME_LENGTH  # codec, task, variant and method names; payload dict keys
DEFAULT_METHOD = "sfma"  # what version 1 and 2 files, which do not record it, were coded with (core.methods' default)
MAX_TILES = 4096
BOUND_BYTES = 16  # sha256 prefix that binds a layer record to everything before it
MAX_SIDE = 1 << 16  # pixels per side
MAX_PIXELS = 1 << 28  # after padding
MAX_PAD = 1024  # padding per side: no codec needs a larger multiple
MAX_DEPTH = 8  # nesting of the strings and shape trees
MAX_INT = (1 << 32) - 1
LATENT_FACTOR = 8  # a shape may describe at most this many latent values per padded pixel

_BYTES, _LIST, _INT, _DICT = 0, 1, 2, 3
_PREFIX = struct.Struct(">4sB")
_CRC = struct.Struct(">I")
_RECORD = {2: struct.Struct(">BI"), 3: struct.Struct(">BII")}  # kind, (tile,) length
_TILED = 4  # flag


def check_name(name: Any, what: str) -> str:
    """``name`` when it is a safe name for a header field (``what``: "task", "codec", ...): the
    rule of every name icmh-hub takes (``core.names``; method and variant names may also hold
    ">"). Otherwise a BitstreamError that says why and shows the name escaped (never raw: it may
    hold terminal escapes)."""
    if (is_method_name if what in ("method", "variant") else is_name)(name) and name:
        return name
    shown = ascii(name) if len(ascii(name)) <= 80 else ascii(name)[:77] + "..."
    if isinstance(name, str) and len(name) > MAX_NAME:
        why = f"{len(name)} characters, more than the {MAX_NAME} a name may have"
    else:
        why = f"a name has {NAME_RULE}"
    raise BitstreamError(f"invalid {what} name {shown} in a .icmh header ({why}); icmh-hub neither writes nor reads such files")


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
    method: str = DEFAULT_METHOD  # the adaptation method (what rebuilds the adapters)
    tile: tuple[int, int] | None = None  # (height, width) of the tiles of a tiled file

    def tile_boxes(self) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of each tile, row by row; one box for an untiled file."""
        tile_height, tile_width = self.tile or (self.height, self.width)
        return [(top, left, min(tile_height, self.height - top), min(tile_width, self.width - left))
                for top in range(0, self.height, tile_height) for left in range(0, self.width, tile_width)]

    def part(self, index: int) -> "Header":
        """The header of tile ``index`` as an untiled file of its own (the padding is the last
        row's and column's)."""
        top, left, height, width = self.tile_boxes()[index]
        last_row, last_column = top + height == self.height, left + width == self.width
        return replace(self, height=height, width=width, tile=None,
                       padded_height=height + (self.padded_height - self.height) * last_row,
                       padded_width=width + (self.padded_width - self.width) * last_column)

    @property
    def pixels(self) -> int:
        """Pixels of the original image (the bpp denominator)."""
        return self.height * self.width

    def check(self) -> "Header":
        """Raise BitstreamError unless every field is in range (used when packing and unpacking)."""
        check_name(self.codec, "codec")
        check_name(self.method, "method")
        _require(1 <= self.quality <= 255, f"quality {self.quality} is out of range")
        _require(self.adapter_kind in ADAPTER_KINDS, f"unknown adapter kind {self.adapter_kind!r}")
        _require((self.task is None) == (self.adapter_kind == "none"), "task and adapter kind disagree")
        if self.task is not None:
            _require(check_name(self.task, "task") != "human", "a task named 'human' (that is the plain codec's name)")
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
        _require(self.variant is None or (self.task is not None and bool(check_name(self.variant, "variant"))),
                 "a human-vision header has no adapter variant")
        _require(not self.layered or self.task is not None, "a layered file needs the adapters that split its layers")
        if self.tile is not None:
            _require(1 <= self.tile[0] <= self.height and 1 <= self.tile[1] <= self.width,
                     f"tile size {self.tile[0]}x{self.tile[1]} does not fit a {self.height}x{self.width} image")
            _require(-(-self.height // self.tile[0]) * -(-self.width // self.tile[1]) <= MAX_TILES,
                     f"more than {MAX_TILES} tiles")
        return self


def pack(header: Header, strings: Any, shape: Any) -> bytes:
    """The bytes of one .icmh file: ``header`` (untiled) plus ``compress()``'s ``strings`` and
    ``shape`` (for a layered header, ``strings`` are [base y, enhancement y (or None), z])."""
    _require(header.tile is None, "a tiled header is packed with pack_tiles")
    return pack_tiles(header, [(strings, shape)])


def pack_tiles(header: Header, parts: list[tuple[Any, Any]]) -> bytes:
    """The bytes of a .icmh file whose image is coded in parts: (strings, shape) per tile of
    ``header.tile_boxes()`` (one part for an untiled header), each as ``pack`` takes them."""
    header.check()
    _require(len(parts) == len(header.tile_boxes()), f"{len(parts)} coded tiles for a grid of {len(header.tile_boxes())}")
    shapes = [shape for _, shape in parts]
    for index, shape in enumerate(shapes):
        _check_shape(shape, header.part(index) if header.tile else header)
    out = bytearray(_PREFIX.pack(MAGIC, FORMAT_VERSION))
    flags = int(header.base_pretrained) | (2 if header.layered else 0) | (_TILED if header.tile else 0)
    out += struct.pack(">BB", flags, ADAPTER_KINDS.index(header.adapter_kind))
    _put_name(out, header.codec)
    out += struct.pack(">B", header.quality)
    for name in (header.task, header.variant, header.method):
        _put_name(out, name or "")
    if header.adapter_id is not None:
        out += bytes.fromhex(header.adapter_id)
    out += bytes.fromhex(header.base_digest)
    out += struct.pack(">IIII", header.height, header.width, header.padded_height, header.padded_width)
    out += struct.pack(">BB", MODES.index(header.mode), header.bits)
    if header.tile:
        out += struct.pack(">II", *header.tile)
    _put_tree(out, shapes if header.tile else shapes[0], 0)
    out += _CRC.pack(zlib.crc32(out))
    hasher = hashlib.sha256(out)
    for kind, tile, tree in _records(header, [strings for strings, _ in parts]):
        record = _record(kind, tile, tree, hasher.digest()[:BOUND_BYTES])
        hasher.update(record)
        out += record
    return bytes(out)


def _records(header: Header, strings: list[Any]) -> list[tuple[str, int, Any]]:
    """(layer kind, tile, strings tree) of every record, in file order."""
    if not header.layered:
        return [("all", tile, tree) for tile, tree in enumerate(strings)]
    for tree in strings:
        _require(isinstance(tree, (list, tuple)) and len(tree) == 3, "layered strings are [base y, enhancement y, z]")
    records = [("base", tile, [tree[0], tree[2]]) for tile, tree in enumerate(strings)]
    enhancements = [tree[1] is not None for tree in strings]
    _require(all(enhancements) or not any(enhancements), "some tiles have an enhancement layer and some do not")
    return records + [("enhancement", tile, [tree[1]]) for tile, tree in enumerate(strings) if tree[1] is not None]


def _record(kind: str, tile: int, strings: Any, bound: bytes) -> bytes:
    payload = bytearray()
    _put_tree(payload, strings, 0)
    record = bytearray(_RECORD[3].pack(LAYER_KINDS.index(kind), tile, len(payload))) + bound + payload
    return bytes(record + _CRC.pack(zlib.crc32(record)))


def unpack(data: bytes) -> tuple[Header, Any, Any]:
    """Parse and verify an untiled .icmh file: (header, strings, shape). Any defect is a
    BitstreamError. For a layered file ``strings`` are [base y, enhancement y or None, z]."""
    header, parts = unpack_tiles(data)
    if header.tile is not None:
        raise BitstreamError("this .icmh file is tiled: read it with unpack_tiles, or decode it with icmh_hub.decode")
    return parts[0]


def unpack_tiles(data: bytes) -> tuple[Header, list[tuple[Header, Any, Any]]]:
    """Parse and verify any .icmh file: (header, [(header, strings, shape) per tile]), each
    part's header that of its tile as an untiled file (an untiled file is one part, its own)."""
    header, layers, shapes, _ = _parse(data)
    parts = []
    for tile, shape in enumerate(shapes):
        part = header.part(tile) if header.tile else header
        if not header.layered:
            parts.append((part, layers["all"][tile], shape))
            continue
        base = layers["base"][tile]
        _require(isinstance(base, list) and len(base) == 2, "the base layer holds [y strings, z strings]")
        enhancement = layers["enhancement"][tile] if "enhancement" in layers else None
        _require(enhancement is None or (isinstance(enhancement, list) and len(enhancement) == 1),
                 "the enhancement layer holds [y strings]")
        parts.append((part, [base[0], None if enhancement is None else enhancement[0], base[1]], shape))
    return header, parts


def strip(data: bytes, layer: str = "base") -> bytes:
    """A layered file cut down to its header and base layer(s), bytes as they were (no re-encoding)."""
    if layer != "base":
        raise BitstreamError(f"only the enhancement layer can be stripped (keeping --layer base), not {layer!r}")
    header, _, _, ends = _parse(data)
    if not header.layered:
        raise BitstreamError("this file has a single layer (it was not coded with a scalable variant); there is nothing to strip")
    return bytes(data[: ends["base"]])


def layer_bytes(data: bytes) -> dict[str, int]:
    """Bytes of each part of a file: "header", then "all", or "base" and "enhancement" (each
    with its records' framing; a tiled file's tiles summed)."""
    _, _, _, ends = _parse(data)
    sizes, previous = {}, 0
    for part, end in ends.items():
        sizes[part] = end - previous
        previous = end
    return sizes


def _parse(data: bytes) -> tuple[Header, dict[str, list[Any]], list[Any], dict[str, int]]:
    """(header, layer kind -> strings tree per tile, shape per tile, part -> end offset in
    ``data``; the parts are "header" and the layer kinds, in file order)."""
    data = _prefix_checked(data)
    version = data[len(MAGIC)]
    if version == 1:
        header, strings, shape, header_end = _unpack_version_1(data)
        return header, {"all": [strings]}, [shape], {"header": header_end, "all": len(data)}
    reader = _Reader(memoryview(data), _PREFIX.size)
    fields = _header_fields(reader, version)
    shape = reader.tree(0)
    (stored,) = reader.unpack(">I")
    if zlib.crc32(data[: reader.pos - _CRC.size]) != stored:
        raise BitstreamError("corrupted .icmh file (header checksum mismatch); the file was damaged after it was written")
    header = Header(**fields).check()
    tiles = len(header.tile_boxes())
    shapes = [shape]
    if header.tile:
        _require(isinstance(shape, (list, tuple)) and len(shape) == tiles, f"the shapes do not list one per tile of {tiles}")
        shapes = list(shape)
    layers, ends = _read_records(reader, data, version, tiles)
    order = tuple(layers)
    expected = (("base",), ("base", "enhancement")) if header.layered else (("all",),)
    _require(order in expected, f"layers {list(order) or 'none'} where the header announces {' or '.join(map(str, expected))}")
    _require(all(len(records) == tiles for records in layers.values()), f"some of the {tiles} tiles have no layer of a kind others have")
    header = replace(header, layers=order)
    for tile, shape in enumerate(shapes):
        _check_shape(shape, header.part(tile) if header.tile else header)
    return header, layers, shapes, {"header": ends.pop("header"), **ends}


def _read_records(reader: "_Reader", data: bytes, version: int, tiles: int) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """The layer records after the header: (kind -> strings per tile, in order; part -> end
    offset). Each record's checksum is checked, then (version 3) its bound to the bytes before it;
    a kind's records must come tile after tile."""
    layers: dict[str, list[Any]] = {}
    ends = {"header": reader.pos}
    hasher, previous = hashlib.sha256(data[: reader.pos]), None
    while not reader.at_end():
        start = reader.pos
        kind, tile, length = _record_head(reader, version)
        _require(kind < len(LAYER_KINDS), f"unknown layer kind {kind}")
        name, where = LAYER_KINDS[kind], f" of tile {tile}" if tiles > 1 else ""
        _require(tile < tiles, f"a layer of tile {tile}, in a file of {tiles} tiles")
        count = len(layers.get(name, ()))
        _require(tile >= count, f"the {name} layer{where} appears twice")
        _require(tile == count, f"the {name} layer of tile {tile} comes before that of tile {count}")
        _require(previous in (None, name) or len(layers[previous]) == tiles, f"a {name} layer before every tile's {previous} layer")
        previous = name
        _require(length + _CRC.size <= reader.remaining(), f"truncated {name} layer{where}")
        bound = reader.take(BOUND_BYTES) if version >= 3 else b""
        payload = _Reader(memoryview(data)[reader.pos : reader.pos + length])
        reader.take(length)
        (stored,) = reader.unpack(">I")
        if zlib.crc32(data[start : reader.pos - _CRC.size]) != stored:
            raise BitstreamError(f"corrupted or truncated .icmh file ({name} layer{where} checksum mismatch)")
        if version >= 3 and hasher.digest()[:BOUND_BYTES] != bound:
            raise BitstreamError(
                f"the {name} layer{where} of this .icmh file was not written with its header and the layers before it "
                "(spliced from another file); decode files as icmh-hub wrote them, or cut them with `icmh-hub strip`"
            )
        hasher.update(data[start : reader.pos])
        strings = payload.tree(0)
        _require(payload.at_end(), f"unexpected bytes in the {name} layer{where}")
        layers.setdefault(name, []).append(strings)
        ends[name] = reader.pos
    return layers, ends


def _record_head(reader: "_Reader", version: int) -> tuple[int, int, int]:
    """(kind, tile, length) of a layer record (version 2 records have no tile: 0)."""
    if version < 3:
        kind, length = reader.unpack(">BI")
        return kind, 0, length
    return reader.unpack(">BII")


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
    """The header's fields up to the tile size, as Header's keywords (version 1 has no variant
    and no layered flag, versions 1 and 2 no method and no tiles)."""
    flags, kind = reader.unpack(">BB")
    _require(flags < {1: 2, 2: 4}.get(version, 8), "unknown flags")
    _require(kind < len(ADAPTER_KINDS), f"unknown adapter kind {kind}")
    codec = reader.name()
    (quality,) = reader.unpack(">B")
    task = reader.name() or None
    variant = (reader.name() or None) if version >= 2 else None
    method = reader.name() if version >= 3 else DEFAULT_METHOD
    adapter_id = reader.take(32).hex() if kind else None
    base_digest = reader.take(BASE_DIGEST_BYTES).hex()
    height, width, padded_height, padded_width = reader.unpack(">IIII")
    mode, bits = reader.unpack(">BB")
    _require(mode < len(MODES), f"unknown image mode {mode}")
    tile = reader.unpack(">II") if flags & _TILED else None
    return {
        "codec": codec, "quality": quality, "task": task, "adapter_kind": ADAPTER_KINDS[kind], "adapter_id": adapter_id,
        "base_pretrained": bool(flags & 1), "base_digest": base_digest, "height": height, "width": width,
        "padded_height": padded_height, "padded_width": padded_width, "mode": MODES[mode], "bits": bits,
        "variant": variant, "layered": bool(flags & 2), "method": method, "tile": tile,
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
        """A u8-length name, bytes that are not UTF-8 kept as escapes (names are judged by
        ``check_name``, which shows them escaped)."""
        (length,) = self.unpack(">B")
        return self.take(length).decode(errors="backslashreplace")

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
            _require(0 < len(key) <= MAX_NAME and key not in result, "bad payload key")
            result[key] = self.tree(depth + 1)
        return result
