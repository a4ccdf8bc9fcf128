"""Crafted .icmh files with valid checksums (random header fields, sizes, latent shapes, string
lengths and bytes, built from real files of several codecs), decoded by ``icmh-hub decompress``
in a subprocess: each file is refused with one ``error:`` line of our own or decodes to a PNG;
the process never ends in a signal, never hangs, never prints a traceback, never grows past a
memory bound. Many files per subprocess (a Python + torch start is seconds). The subprocess runs
offline (HF_HUB_OFFLINE=1): a header that names pretrained weights which are not here gets a
DownloadError instead of a download attempt.

The default run decodes one batch (the issue's recipes plus hypothesis-drawn files); the slow
run (``pytest -m slow``) 14 batches of 40 over more codecs (autoregressive, ELIC, TIC)."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icmh_hub import load
from icmh_hub.coding import Encoder, encode
from icmh_hub.core.padding import padded_size
from icmh_hub.errors import BitstreamError
from icmh_hub.formats.bitstream import (
    ADAPTER_KINDS, FORMAT_VERSION, MAGIC, MODES, _put_tree, layer_bytes, strip, unpack, unpack_tiles,
)

from .conftest import make_image, spread_latents

MAX_PIXELS = 300_000  # what the decoding subprocess may decode (keeps every decode short)
PEAK_MB = 3000  # the subprocess's resident memory may never exceed this
BATCH_SECONDS = 600  # a batch that takes longer is a hang
FILE_SECONDS = 60  # so is one file that takes longer to decode
FAST_CODECS = (("mbt2018-mean-demo", "cls", True, None), ("mbt2018-mean", "cls", False, None), ("mbt2018", None, False, None),
               ("mbt2018-mean", "seg", False, "scalable-sfma"))
SLOW_CODECS = FAST_CODECS + (
    ("cheng2020-anchor", None, False, None), ("bmshj2018-hyperprior", "det", False, None), ("elic2022", None, False, None),
    ("tic", None, False, None), ("bmshj2018-hyperprior", "cls", False, "scalable-mask"),
)
RUNNER = (
    "import re, sys\nfrom icmh_hub.cli import main\ntry:\n    main()\nfinally:\n"
    "    print('peak-kb', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)"
)  # VmHWM: this program's own peak (ru_maxrss keeps the forking test process's resident set across exec)
COUNTS = {"tried": 0, "decoded": 0, "refused": 0, "crashes": 0, "hangs": 0, "peak_mb": 0}
REASONS: dict[str, int] = {}


def _real_files(codecs) -> list[tuple]:
    """(header, strings, shape) of a real file per codec, from a 64x96 image."""
    files = []
    for name, task, pretrained, variant in codecs:
        codec = load(name, task, 1, pretrained=pretrained, variant=variant)
        files.append(unpack(encode(codec, make_image(64, 96, seed=4), pretrained=pretrained)))
    return files


@pytest.fixture(scope="module")
def fast_files():
    return _real_files(FAST_CODECS)


@pytest.fixture(scope="module")
def slow_files():
    return _real_files(SLOW_CODECS)


def _sealed(out: bytes | bytearray) -> bytes:
    return bytes(out) + struct.pack(">I", zlib.crc32(out))


def _write(header, strings, shape, layers: str = "as-coded", **fields) -> bytes:
    """The bytes of a version 3 file from any field values (no range checks), with its checksums
    and bounds made to fit. ``layers``: "as-coded" (one "all" layer, or base and enhancement for a
    layered header), "base" (the enhancement left out), "swapped", "all" (one layer whatever the
    header says). With a ``tile`` field (or a tiled header), ``strings`` and ``shape`` are lists
    with one item per tile record to write."""
    f = {
        "flags": int(header.base_pretrained) | 2 * header.layered, "kind": ADAPTER_KINDS.index(header.adapter_kind),
        "codec": header.codec, "quality": header.quality, "task": header.task or "", "variant": header.variant or "",
        "method": header.method, "adapter_id": bytes.fromhex(header.adapter_id or ""), "digest": bytes.fromhex(header.base_digest),
        "size": (header.height, header.width, header.padded_height, header.padded_width),
        "mode": MODES.index(header.mode), "bits": header.bits, "tile": header.tile,
    } | fields
    tiled = f["tile"] is not None
    out = bytearray(MAGIC + bytes([FORMAT_VERSION]))
    out += struct.pack(">BB", f["flags"] | 4 * tiled, f["kind"])
    _raw_name(out, f["codec"])
    out += struct.pack(">B", f["quality"])
    for name in ("task", "variant", "method"):
        _raw_name(out, f[name])
    out += f["adapter_id"] if f["kind"] else b""
    out += f["digest"] + struct.pack(">IIII", *f["size"]) + struct.pack(">BB", f["mode"], f["bits"])
    out += struct.pack(">II", *f["tile"]) if tiled else b""
    _put_tree(out, shape, 0)
    out = bytearray(_sealed(out))
    for tile, tree in enumerate(strings if tiled else [strings]):
        records = [(0, tree)]
        if header.layered and layers != "all" and isinstance(tree, list) and len(tree) == 3:
            records = [(1, [tree[0], tree[2]]), (2, [tree[1]])]
            records = {"base": records[:1], "swapped": records[::-1]}.get(layers, records)
        for kind, payload in records:
            out += _record(kind, tile, payload, hashlib.sha256(out).digest()[:16])
    return bytes(out)


def _raw_name(out: bytearray, name: str | bytes) -> None:
    raw = name if isinstance(name, bytes) else name.encode()
    out += struct.pack(">B", len(raw)) + raw


def _record(kind: int, tile: int, tree, bound: bytes) -> bytes:
    payload = bytearray()
    _put_tree(payload, tree, 0)
    return _sealed(struct.pack(">BII", kind, tile, len(payload)) + bound + payload)


def _refit(shape, z_grid):
    """The shape tree with every latent grid moved to the given z grid (and y = 4x it)."""
    if isinstance(shape, tuple) and all(isinstance(v, int) for v in shape):
        return z_grid if len(shape) == 2 else (*shape[:-2], 4 * z_grid[0], 4 * z_grid[1])
    if isinstance(shape, dict):
        return {key: _refit(value, z_grid) for key, value in shape.items()}
    return [_refit(item, z_grid) for item in shape]


SIDE = st.integers(1, 600)
LARGE_SIDE = st.integers(600, 1 << 17)
U32 = st.integers(0, (1 << 32) - 1)
TREE = st.recursive(st.one_of(st.binary(max_size=40), st.integers(0, 300)), lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@st.composite
def _string(draw, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["keep"] * 3 + ["random"] * 3 + ["ff", "cut", "cut", "longer", "longer", "huge"]))
    if kind == "keep":
        return original
    if kind == "random":
        return draw(st.binary(max_size=2 * len(original) + 64))
    if kind == "ff":
        return b"\xff" * draw(st.integers(0, 600))
    if kind == "cut":
        return original[: draw(st.integers(0, len(original)))]
    if kind == "longer":
        return original + draw(st.binary(min_size=1, max_size=300))
    return bytes(draw(st.integers(20_000, 200_000)))


@st.composite
def crafted(draw, files) -> bytes:
    """One crafted file: mostly plausible (so that it reaches the entropy decoder), sometimes not."""
    header, strings, shape = draw(st.sampled_from(files))
    fields = {}
    size_kind = draw(st.sampled_from(["same"] * 10 + ["small"] * 7 + ["large"] * 3))
    height, width = {"same": (header.height, header.width), "small": (draw(SIDE), draw(SIDE)),
                     "large": (draw(LARGE_SIDE), draw(SIDE))}[size_kind]
    padded = padded_size(height, width, 64)
    if draw(st.integers(0, 9)) == 0:
        padded = (draw(U32), draw(U32))
    fields["size"] = (height, width, *padded)
    shape_kind = draw(st.sampled_from(["fit"] * 8 + ["same", "random"]))
    z_grid = (padded[0] // 64, padded[1] // 64)
    shape = {"fit": lambda: _refit(shape, z_grid), "same": lambda: shape, "random": lambda: draw(TREE)}[shape_kind]()
    strings = [[draw(_string(s)) for s in latent] for latent in strings]
    structure = draw(st.sampled_from(["keep"] * 16 + ["drop", "repeat", "two", "random"]))
    if structure == "drop":
        strings = strings[:-1]
    elif structure == "repeat":
        strings = strings + strings[-1:]
    elif structure == "two":
        strings = [latent * 2 for latent in strings]
    elif structure == "random":
        strings = draw(TREE)
    layers = draw(st.sampled_from(["as-coded"] * 6 + ["base", "swapped", "all"])) if header.layered else "as-coded"
    field = draw(st.sampled_from([None] * 12 + ["flags", "kind", "quality", "mode", "bits", "variant"]))
    if field is not None:  # one of the other header fields too
        fields[field] = draw({"flags": st.integers(0, 7), "kind": st.integers(0, 3), "quality": st.integers(0, 255),
                              "mode": st.integers(0, 3), "bits": st.sampled_from([0, 8, 12, 16, 255]),
                              "variant": st.sampled_from(["", "sfma", "scalable-sfma", "scalable-mask", "bogus"])}[field])
        if field == "kind" and fields["kind"] and not header.adapter_id:
            fields["adapter_id"] = draw(st.binary(min_size=32, max_size=32))
    return _write(header, strings, shape, layers, **fields)


def _issue_recipes(files) -> list[bytes]:
    """The files of the issue: a 64x96 file whose header says 128x128 (latent (2, 2)), 256, 512, 2048."""
    header, strings, shape = files[1]
    return [_write(header, strings, (side // 64, side // 64), size=(side, side, side, side)) for side in (128, 256, 512, 2048)]


def _decode_batch(datas: list[bytes], max_pixels: int = MAX_PIXELS) -> None:
    """Decode the files in one ``icmh-hub decompress`` subprocess and check how it ended."""
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in"
        inputs.mkdir()
        for i, data in enumerate(datas):
            (inputs / f"f{i:03d}.icmh").write_bytes(data)
        command = [sys.executable, "-c", RUNNER, "decompress", str(inputs), "-o", str(Path(folder) / "out"), "--max-pixels", str(max_pixels)]
        try:
            process = subprocess.run(command, capture_output=True, text=True, timeout=BATCH_SECONDS,
                                     env=dict(os.environ, HF_HUB_OFFLINE="1"))
        except subprocess.TimeoutExpired:
            COUNTS["hangs"] += 1
            raise AssertionError(f"decoding {len(datas)} crafted files took over {BATCH_SECONDS} s") from None
        COUNTS["tried"] += len(datas)
        if process.returncode < 0:
            COUNTS["crashes"] += 1
        assert process.returncode in (0, 1), f"ended with {process.returncode}: {process.stderr[-2000:]}"
        errors = [line for line in process.stderr.splitlines() if line.startswith("error:") and "files failed" not in line]
        rows = [line.split() for line in process.stdout.splitlines() if line.startswith(str(Path(folder) / "out"))]
        assert "Traceback" not in process.stderr and not [e for e in errors if "unexpected" in e], process.stderr[-3000:]
        assert "\x1b" not in process.stderr + process.stdout and "\x07" not in process.stderr + process.stdout, "a raw escape was printed"
        assert len(errors) + len(rows) == len(datas), (process.stdout[-2000:], process.stderr[-2000:])
        assert all(float(row[-1]) < FILE_SECONDS for row in rows), rows
        peak_kb = int(process.stderr.rsplit("peak-kb", 1)[1].split()[0])
        COUNTS["peak_mb"] = max(COUNTS["peak_mb"], round(peak_kb / 1e3))
        assert peak_kb / 1e3 < PEAK_MB, f"the decoder's memory reached {peak_kb / 1e3:.0f} MB"
        COUNTS["decoded"] += len(rows)
        COUNTS["refused"] += len(errors)
        for line in errors:
            reason = line.split(": ", 2)[-1]
            key = reason.split(";")[0].split("(")[0][:60]
            REASONS[key] = REASONS.get(key, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\ncrafted files: {COUNTS}")
    for reason, count in sorted(REASONS.items(), key=lambda item: -item[1]):
        print(f"  {count:4d}  {reason}")


def test_crafted_files_never_crash_or_hang(fast_files):
    """16 hypothesis-drawn files and the issue's recipes, in one subprocess (the slow run draws batches of 40 over more codecs)."""
    batch = []

    @settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(crafted(fast_files))
    def draw(data):
        batch.append(data)

    draw()
    _decode_batch(_issue_recipes(fast_files) + batch)


HOSTILE_NAMES = ("\x1b[2J\x1b[H", "\x1b]0;owned\x07", "a" * 100, "a" * 255, "../../x", ".hidden", "x..y", "t/ask", "ta sk",
                 "tâsk", "\u202eksat", "", "human", b"\xff\xfe\x1b", "a" * 64, "x.y", "cls\n")


def _spliced(files) -> list[bytes]:
    """Files made of two: a stripped layered file plus another image's enhancement layer, a cls
    header with a human file's layer, tiles of one tiled file in another, records swapped."""
    layered, other_layered, cls, human, tiled, other_tiled = files
    cut = len(strip(layered))
    spliced = [layered[:cut] + other_layered[len(strip(other_layered)):],  # same header, another image
               cls[: layer_bytes(cls)["header"]] + human[layer_bytes(human)["header"]:],
               human[: layer_bytes(human)["header"]] + cls[layer_bytes(cls)["header"]:]]
    head, other_head = layer_bytes(tiled)["header"], layer_bytes(other_tiled)["header"]
    records = _records_of(tiled[head:])
    other = _records_of(other_tiled[other_head:])
    spliced.append(tiled[:head] + records[0] + other[1] + b"".join(records[2:]))  # one tile from another image
    spliced.append(tiled[:head] + records[1] + records[0] + b"".join(records[2:]))  # tiles swapped
    spliced.append(tiled[:head] + b"".join(records[:-1]))  # a tile missing
    return spliced


def _records_of(data: bytes) -> list[bytes]:
    """Split a file's layer records (version 3: kind, tile, length, bound, payload, crc32)."""
    records = []
    while data:
        length = struct.unpack(">I", data[5:9])[0]
        records.append(data[: 9 + 16 + length + 4])
        data = data[9 + 16 + length + 4 :]
    return records


def _hostile_grids(files) -> list[bytes]:
    """Tiled headers whose grid is zero, huge, or does not fit the image or the records."""
    header, strings, shape = files[1]  # mbt2018-mean cls, 64x96 (z grid 1x2)
    one = _refit(shape, (1, 1))
    out = [_write(header, [strings], [shape], tile=tile) for tile in ((0, 0), (0, 96), (64, 0), (65, 96), (64, 97), (1, 1), (1 << 31, 1 << 31))]
    out.append(_write(header, [strings, strings], [one, _refit(shape, (1, 1))], tile=(64, 64)))  # fits: two 64x64 / 64x32 tiles
    out.append(_write(header, [strings, strings], [one, one], tile=(64, 48)))  # inner tile not a multiple of 64
    out.append(_write(header, [strings], [one, one], tile=(64, 64)))  # a tile without its record
    out.append(_write(header, [strings] * 3, [one, one], tile=(64, 64)))  # one record too many
    out.append(_write(header, [strings, strings], [one], tile=(64, 64)))  # one shape for two tiles
    out.append(_write(header, [strings, strings], [shape, shape], tile=(64, 64)))  # shapes of the whole image
    big = (60000, 60000, 60032, 60032)
    out.append(_write(header, [strings], [one], tile=(64, 64), size=big))  # 880,000 tiles
    out.append(_write(header, [strings] * 4, [(64, 64)] * 4, tile=(30016, 30016), size=big))  # tiles over the pixel limit
    out.append(_write(header, [strings] * 16, [one] * 16, tile=(64, 64), size=(256, 256, 256, 256)))  # 16 tiles that decode
    return out


def _named(files) -> list[bytes]:
    """Headers naming hostile codecs, tasks, variants and methods (escapes, 100 and 255
    characters, paths, non-UTF-8 bytes)."""
    header, strings, shape = files[1]
    return [_write(header, strings, shape, **{field: name}) for name in HOSTILE_NAMES for field in ("codec", "task", "variant", "method")]


def _spread(codec):
    """``codec`` with latents over many bins (a fresh random codec codes every image alike)."""
    spread_latents(codec.base)
    codec.update(force=True)
    return codec


@pytest.fixture(scope="module")
def splice_files():
    """Layered files of two images, a cls and a human file, tiled files of two images
    (mbt2018-mean q1, random weights spread so that different images give different bytes)."""
    layered = _spread(load("mbt2018-mean", "seg", 1, pretrained=False, variant="scalable-sfma"))
    cls = _spread(load("mbt2018-mean", "cls", 1, pretrained=False))
    human = _spread(load("mbt2018-mean", None, 1, pretrained=False))
    first, second = make_image(64, 96, seed=4), make_image(64, 96, seed=5)
    tiled = Encoder(cls, pretrained=True, tile=64)
    files = (encode(layered, first, pretrained=True), encode(layered, second, pretrained=True), encode(cls, first, pretrained=True),
             encode(human, first, pretrained=True), tiled.encode(make_image(128, 128, seed=4)).data,
             tiled.encode(make_image(128, 128, seed=5)).data)
    assert files[0] != files[1] and files[4] != files[5]
    return files


def test_spliced_tiled_and_named_files_never_crash(fast_files, splice_files):
    """Spliced layers are all refused; hostile tile grids and names are refused or decode,
    never crash, and no name is printed raw (the batch's output has no escape character)."""
    spliced = _spliced(splice_files)
    for index, data in enumerate(spliced):
        with pytest.raises(BitstreamError, match="spliced" if index < 4 else "tile"):
            unpack_tiles(data)
    grids, named = _hostile_grids(fast_files), _named(fast_files)
    refused_before = COUNTS["refused"]
    _decode_batch(spliced + grids + named)
    assert COUNTS["refused"] - refused_before >= len(spliced)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_many_crafted_files_never_crash_or_hang(slow_files, data):
    """15 batches of 40 files (a failing batch is shrunk by hypothesis to the files that fail)."""
    _decode_batch(data.draw(st.lists(crafted(slow_files), min_size=40, max_size=40)))


def test_the_pixel_limit_applies_to_headers(fast_files):
    """A header naming a larger image than the limit is refused before anything is decoded."""
    header, strings, shape = fast_files[0]
    data = _write(header, strings, (10, 10), size=(640, 640, 640, 640))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.icmh"
        path.write_bytes(data)
        from click.testing import CliRunner

        from icmh_hub.cli import main

        result = CliRunner().invoke(main, ["decompress", str(path), "-o", str(Path(folder) / "big.png"), "--max-pixels", "100000"])
    assert result.exit_code == 1
    assert "640x640 is 0.4 MP, more than the limit of 0.1 MP" in result.stderr and "--max-pixels 409600" in result.stderr
