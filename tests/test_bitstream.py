"""The .icmh container (pack / unpack, every kind of bad input) and encode / decode round trips."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from icmh_hub import BitstreamError, IcmhError, NumericalError, load, save_adapters
from icmh_hub.formats.adapter_files import load_adapters
from icmh_hub.core.adapter_set import build_adapters
from icmh_hub.formats.bitstream import (
    FORMAT_VERSION, MAGIC, MODES, Header, _put_name, _put_tree, check_name, layer_bytes, pack, pack_tiles, read_header, strip,
    unpack, unpack_tiles,
)
from icmh_hub.coding import Decoder, Encoder, decode, encode
from icmh_hub.formats.images import ImageInfo, read_image

from .conftest import make_image, spread_latents

CODEC, Q = "mbt2018-mean", 1


def _header(**changes) -> Header:
    fields = dict(
        codec=CODEC, quality=Q, task="cls", adapter_kind="file", adapter_id="ab" * 32,
        base_pretrained=True, base_digest="cd" * 16, height=65, width=33, padded_height=128,
        padded_width=64, mode="RGB", bits=8,
    )
    return Header(**(fields | changes))


HYPERPRIOR = ([[b"\x01\x02\x03"], [b"z" * 40]], (2, 1))
ELIC_LIKE = ([[b"a"], [b""], [b"bb"]], {"y": [(16, 4, 4), (32, 4, 4)], "hyper": (1, 1)})


LAYERED = ([[b"base y"], [b"enhancement y"], [b"z" * 40]], (2, 1))


def _with_crc(body: bytes) -> bytes:
    """``body`` with a checksum made to fit (to reach the parser behind the checksum)."""
    return body + struct.pack(">I", zlib.crc32(body))


def _header_body(data: bytes) -> tuple[bytes, bytes]:
    """(the header's bytes without their checksum, the layers after it) of a file."""
    end = layer_bytes(data)["header"]
    return data[: end - 4], data[end:]


def _version_2(header: Header, strings, shape) -> bytes:
    """A file as icmh-hub 0.2 wrote it (format version 2: no method, no tiles, layer records of
    kind, length, payload and crc32)."""
    out = bytearray(MAGIC + bytes([2]))
    out += struct.pack(">BB", int(header.base_pretrained) | 2 * header.layered, ("none", "file", "tensors").index(header.adapter_kind))
    _put_name(out, header.codec)
    out += struct.pack(">B", header.quality)
    _put_name(out, header.task or "")
    _put_name(out, header.variant or "")
    out += bytes.fromhex(header.adapter_id or "") + bytes.fromhex(header.base_digest)
    out += struct.pack(">IIIIBB", header.height, header.width, header.padded_height, header.padded_width,
                       MODES.index(header.mode), header.bits)
    _put_tree(out, shape, 0)
    out = bytearray(_with_crc(bytes(out)))
    records = [(1, [strings[0], strings[2]]), (2, [strings[1]])] if header.layered else [(0, strings)]
    for kind, tree in records:
        payload = bytearray()
        _put_tree(payload, tree, 0)
        out += _with_crc(struct.pack(">BI", kind, len(payload)) + payload)
    return bytes(out)


def _version_1(header: Header, strings, shape) -> bytes:
    """A file as icmh-hub 0.1 wrote it (format version 1: the strings, then the shape, one crc32)."""
    out = bytearray(MAGIC + bytes([1]))
    out += struct.pack(">BB", int(header.base_pretrained), ("none", "file", "tensors").index(header.adapter_kind))
    _put_name(out, header.codec)
    out += struct.pack(">B", header.quality)
    _put_name(out, header.task or "")
    out += bytes.fromhex(header.adapter_id or "") + bytes.fromhex(header.base_digest)
    out += struct.pack(">IIIIBB", header.height, header.width, header.padded_height, header.padded_width,
                       MODES.index(header.mode), header.bits)
    _put_tree(out, strings, 0)
    _put_tree(out, shape, 0)
    return _with_crc(bytes(out))


# -- the container --------------------------------------------------------------------------------


@pytest.mark.parametrize("strings, shape", [HYPERPRIOR, ELIC_LIKE])
def test_pack_unpack_round_trip(strings, shape):
    for header in (_header(), _header(task=None, adapter_kind="none", adapter_id=None, mode="L", bits=16)):
        data = pack(header, strings, shape)
        assert data[:4] == MAGIC and data[4] == FORMAT_VERSION
        assert unpack(data) == (header, strings, shape)
        assert read_header(data) == header


def test_torch_size_shapes_are_stored_as_ints():
    header, strings, shape = unpack(pack(_header(), [[b"x"]], torch.Size([2, 1])))
    assert shape == (2, 1) and all(type(v) is int for v in shape)


def test_pack_refuses_bad_fields():
    for bad in (
        _header(codec=""), _header(quality=0), _header(task="human"), _header(adapter_id="zz"),
        _header(task=None), _header(height=0), _header(padded_height=60), _header(mode="CMYK"),
        _header(bits=12), _header(height=1 << 17, padded_height=1 << 17),
    ):
        with pytest.raises(BitstreamError):
            pack(bad, [[b""]], (1, 1))
    for payload in ([[1.5]], [[True]], {1: b""}, [[-1]]):
        with pytest.raises(BitstreamError):
            pack(_header(), payload, (1, 1))
    with pytest.raises(BitstreamError, match="too large"):
        pack(_header(), [[b""]], (4096, 4096))


def test_empty_wrong_magic_future_version_truncated():
    data = pack(_header(), *HYPERPRIOR)
    with pytest.raises(BitstreamError, match="empty"):
        unpack(b"")
    with pytest.raises(BitstreamError, match="magic"):
        unpack(b"\x89PNG" + data[4:])
    with pytest.raises(BitstreamError, match="newer"):
        unpack(_with_crc(MAGIC + bytes([FORMAT_VERSION + 1]) + data[5:-4]))
    with pytest.raises(BitstreamError):
        unpack("not bytes")
    for cut in range(len(data)):  # every truncation
        with pytest.raises(BitstreamError):
            unpack(data[:cut])


def test_every_flipped_bit_is_caught():
    data = pack(_header(), *HYPERPRIOR)
    for position in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[position // 8] ^= 1 << (position % 8)
        with pytest.raises(BitstreamError):
            unpack(bytes(damaged))


def test_absurd_sizes_behind_a_valid_checksum():
    """A crafted file with valid checksums still cannot make the parser allocate or loop."""
    body, layers = _header_body(pack(_header(), *HYPERPRIOR))
    start = body.index(struct.pack(">IIII", 65, 33, 128, 64))
    huge_image = body[:start] + struct.pack(">IIII", 1 << 30, 1 << 30, 1 << 30, 1 << 30) + body[start + 16 :]
    with pytest.raises(BitstreamError, match="out of range"):
        unpack(_with_crc(huge_image) + layers)
    shape = start + 18
    for tree, message in ((struct.pack(">BI", 1, 0xFFFFFFFF), "structure"), (struct.pack(">BI", 0, 0xFFFFFFF0) + b"xx", "truncated"),
                          (struct.pack(">BI", 1, 1) * 50, "nested")):
        with pytest.raises(BitstreamError, match=message):
            unpack(_with_crc(body[:shape] + tree) + layers)
    record = struct.pack(">BII", 0, 0, 0xFFFFFFF0) + b"xx"  # a layer longer than the file
    with pytest.raises(BitstreamError, match="truncated all layer"):
        unpack(_with_crc(body) + _with_crc(record))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    with pytest.raises(BitstreamError):
        unpack(data)
    with pytest.raises(BitstreamError):
        unpack(MAGIC + bytes([FORMAT_VERSION]) + data)
    with pytest.raises(BitstreamError):
        decode(MAGIC + bytes([FORMAT_VERSION]) + data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8), st.booleans())
def test_mutated_files_never_crash(edits, fix_crc):
    """Mutations are caught by the checksum; with the checksum made to fit, the parser either
    refuses them or returns a header that passes every range check."""
    data = bytearray(pack(_header(), *ELIC_LIKE))
    for position, value in edits:
        data[position % len(data)] = value
    data = bytes(data)
    if fix_crc:
        data = _with_crc(data[:-4])
    try:
        header, _, _ = unpack(data)
    except BitstreamError:
        return
    assert header.check() is header
    assert fix_crc or data == pack(_header(), *ELIC_LIKE)


# -- encode / decode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codec():
    """The seeded random codec with random cls adapters, exactly as a decoder rebuilds it."""
    return load(CODEC, "cls", Q, pretrained=False)


@pytest.fixture(scope="module")
def decoder(codec):
    return Decoder(codecs=[codec])


def test_decoder_rebuilds_the_random_codec_by_itself(codec):
    x = make_image(65, 33)
    data = encode(codec, x)
    header = read_header(data)
    assert (header.task, header.adapter_kind, header.base_pretrained) == ("cls", "tensors", False)
    with torch.no_grad():
        out = codec.compress(torch.nn.functional.pad(x, (0, 31, 0, 63), mode="replicate"))
        direct = codec.decompress(out["strings"], out["shape"])["x_hat"][..., :65, :33].clamp(0, 1)
    assert torch.equal(decode(data), direct)  # a fresh decoder: codec and adapters from the seed


@pytest.mark.parametrize("size", [(1, 1), (65, 33), (64, 64)])
def test_round_trip_sizes(codec, decoder, size):
    x = make_image(*size)
    decoded = decoder.decode(encode(codec, x, pretrained=False))
    assert decoded.image.shape == x.shape
    assert 0 <= decoded.image.min() and decoded.image.max() <= 1


def _file(tmp_path, name, array, **kwargs):
    path = tmp_path / name
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_round_trip_files_of_every_mode(tmp_path, codec, decoder):
    rng = np.random.default_rng(1)
    rotated = Image.fromarray(rng.integers(0, 256, (20, 36, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 8
    rotated.save(tmp_path / "exif.jpg", exif=exif)
    files = {
        _file(tmp_path, "g16.png", rng.integers(0, 65536, (17, 9), dtype=np.uint16)): ("L", 16, (17, 9)),
        _file(tmp_path, "rgba.png", rng.integers(0, 256, (9, 70, 4), dtype=np.uint8)): ("RGB", 8, (9, 70)),
        _file(tmp_path, "g8.png", rng.integers(0, 256, (5, 5), dtype=np.uint8)): ("L", 8, (5, 5)),
        tmp_path / "exif.jpg": ("RGB", 8, (36, 20)),
    }
    encoder = Encoder(codec, pretrained=False)
    for path, (mode, bits, size) in files.items():
        with pytest.warns(UserWarning) if "rgba" in path.name else _nothing():
            encoded = encoder.encode(path)
        decoded = decoder.decode(encoded.data)
        assert decoded.image.shape == (1, 3, *size), path.name
        assert decoded.info == ImageInfo(mode, bits)
        assert encoded.bpp > encoded.strings_bpp > 0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_spread_latents_payload_matches_direct_decoding():
    """A codec whose latents span many bins: real payloads, decoded by an independent copy."""
    def spread_codec():
        adapted = load(CODEC, "cls", Q, pretrained=False)
        spread_latents(adapted.base)
        adapted.update(force=True)
        return adapted

    coder, twin = spread_codec(), spread_codec()
    x = make_image(64, 128, seed=3)
    encoded = Encoder(coder).encode(x)
    assert encoded.header.base_pretrained  # not the seeded random weights any more
    assert encoded.string_bytes > 200  # a real payload, not a few bytes of zeros
    image = Decoder(codecs=[twin]).decode(encoded.data).image
    with torch.no_grad():
        reference = coder(x)["x_hat"].clamp(0, 1)
    assert image.shape == x.shape
    assert (image - reference).abs().mean() < 0.05  # entropy coding matched the forward pass
    with pytest.raises(IcmhError):
        Decoder(codecs=[load(CODEC, "cls", Q, pretrained=False)]).decode(encoded.data)  # other weights


def test_task_and_human_are_not_mixed_up(codec, decoder):
    x = make_image(64, 64, seed=5)
    task_file = encode(codec, x, pretrained=False)
    with codec.human():
        human_file = encode(codec, x, pretrained=False)
    assert read_header(human_file).task is None
    adapters = codec.adapter_sets["cls"]
    with pytest.raises(BitstreamError, match="human vision"):
        Decoder(adapter=adapters, codecs=[codec]).decode(human_file)
    as_task = Decoder(adapter=adapters, force_task="cls", codecs=[codec]).decode(human_file).image
    as_human = Decoder(force_task="human", codecs=[codec]).decode(task_file).image
    assert torch.equal(Decoder(codecs=[codec]).decode(human_file).image, decoder.decode(human_file).image)
    assert not torch.equal(as_human, decoder.decode(task_file).image)  # the adapters do matter
    assert not torch.equal(as_task, decoder.decode(human_file).image)


def test_adapter_files_are_checked_by_sha256(tmp_path, codec):
    torch.manual_seed(7)
    good = save_adapters(build_adapters(CODEC, Q, init="reference", task="cls"), tmp_path / "good.safetensors")
    other = save_adapters(build_adapters(CODEC, Q, init="reference", task="cls"), tmp_path / "other.safetensors")
    base = load(CODEC, None, Q, pretrained=False)
    base.add_adapters("cls", load_adapters(good)).set_task("cls")
    data = encode(base, make_image(64, 64), pretrained=False)
    header = read_header(data)
    assert header.adapter_kind == "file" and len(header.adapter_id) == 64
    assert Decoder(adapter=good, codecs=[codec]).decode(data).image.shape == (1, 3, 64, 64)
    with pytest.raises(BitstreamError, match="not the one this file was coded with"):
        Decoder(adapter=other, codecs=[codec]).decode(data)
    assert codec.tasks == ["cls"]  # the decoder left the caller's codec as it was
    with pytest.raises(BitstreamError, match="--adapter"):
        Decoder(codecs=[codec]).decode(data)  # nothing local, and the registry cannot know it


def test_unknown_codec_and_bad_padding(codec):
    data = encode(codec, make_image(8, 8), pretrained=False)
    header, strings, shape = unpack(data)
    with pytest.raises(BitstreamError, match="does not know"):
        decode(pack(_header(codec="jpeg-xxl", adapter_id=header.adapter_id), strings, shape))
    with pytest.raises(BitstreamError, match="padding"):
        decode(pack(_header(height=8, width=8, padded_height=128, padded_width=64), strings, shape))
    with pytest.raises(BitstreamError, match="quality 9"):
        decode(pack(_header(quality=9), strings, shape))


def test_encode_refuses_what_it_cannot_code(codec):
    with pytest.raises(IcmhError, match="AdaptedCodec"):
        encode(codec.base, make_image(8, 8))
    with pytest.raises(IcmhError):
        encode(codec, torch.rand(4, 8, 8))
    with pytest.raises(IcmhError):
        encode(codec, "/nonexistent/image.png")


def test_second_task_of_a_multi_task_random_codec_decodes():
    """Each task's random adapters come from their own seed, so a decoder that rebuilds only the
    coded task gets the same weights as an encoder that loaded several tasks."""
    both = load(CODEC, ["cls", "det"], Q, pretrained=False)
    both.set_task("det")
    x = make_image(64, 64, seed=9)
    with torch.no_grad():
        out = both.compress(x)
        direct = both.decompress(out["strings"], out["shape"])["x_hat"].clamp(0, 1)
    assert torch.equal(decode(encode(both, x, pretrained=False)), direct)


def test_a_nan_in_the_decoder_is_an_error_not_a_black_picture():
    codec = load(CODEC, None, Q, pretrained=False)
    with torch.no_grad():
        [m for m in codec.base.g_s.modules() if isinstance(m, torch.nn.ConvTranspose2d)][0].bias[0] = float("nan")
    data = encode(codec, make_image(64, 64))  # g_s is not run by compress
    with pytest.raises(NumericalError, match="NaN or infinite pixels"):
        Decoder(codecs=[codec]).decode(data)


def test_payload_layout_must_fit_the_header(codec):
    """One string per latent (batch 1) and latent grids of the padded size, checked before decoding."""
    header, strings, shape = unpack(encode(codec, make_image(64, 128), pretrained=False))
    assert shape == (1, 2)
    for bad_strings, bad_shape, message in (
        ([strings[0] * 2, strings[1] * 2], shape, "one latent string per latent"),
        ([strings[0]], shape, None),
        (strings, (2, 2), "do not fit a 128x64"),
        (strings, (1, 2, 3, 4), "do not fit"),
    ):
        with pytest.raises(BitstreamError, match=message):
            Decoder(codecs=[codec]).decode(pack(header, bad_strings, bad_shape))


# -- layers (format version 2) ---------------------------------------------------------------------


def test_layered_round_trip_and_strip():
    header = _header(variant="scalable-sfma", layered=True)
    data = pack(header, *LAYERED)
    read, strings, shape = unpack(data)
    assert (read, strings, shape) == (header, *LAYERED)
    assert read.layers == ("base", "enhancement")
    sizes = layer_bytes(data)
    assert list(sizes) == ["header", "base", "enhancement"] and sum(sizes.values()) == len(data)
    assert sizes["enhancement"] == 9 + 16 + 3 * 5 + len(b"enhancement y") + 4  # kind, tile, length, bound, tree tags, bytes, crc
    base_only = strip(data)
    assert len(base_only) == len(data) - sizes["enhancement"] and data.startswith(base_only)  # a prefix, no re-encoding
    read, strings, shape = unpack(base_only)
    assert read.layers == ("base",) and strings == [[b"base y"], None, [b"z" * 40]]
    assert strip(base_only) == base_only  # nothing left to strip
    with pytest.raises(BitstreamError, match="single layer"):
        strip(pack(_header(), *HYPERPRIOR))


def test_every_truncation_of_a_layered_file_is_refused_but_the_base_layer_end():
    data = pack(_header(variant="scalable-sfma", layered=True), *LAYERED)
    base_end = len(strip(data))
    for cut in range(len(data)):
        if cut == base_end:
            assert unpack(data[:cut])[0].layers == ("base",)
        else:
            with pytest.raises(BitstreamError):
                unpack(data[:cut])


def test_layers_out_of_place_are_refused():
    layered, single = pack(_header(variant="scalable-sfma", layered=True), *LAYERED), pack(_header(), *HYPERPRIOR)
    body, layers = _header_body(layered)
    sizes = layer_bytes(layered)
    base, enhancement = layers[: sizes["base"]], layers[sizes["base"] :]
    all_layer = _header_body(single)[1]
    for records, message in ((enhancement + base, "spliced"), (base + base, "twice"), (enhancement, "spliced"),
                             (b"", "layers"), (all_layer, "layers"), (base + enhancement + enhancement, "twice")):
        with pytest.raises(BitstreamError, match=message):
            unpack(_with_crc(body) + records)
    single_body = _header_body(single)[0]
    with pytest.raises(BitstreamError, match="spliced|layers"):  # a single-layer header with layers
        unpack(_with_crc(single_body) + base + enhancement)
    with pytest.raises(BitstreamError, match="layered"):
        pack(_header(task=None, adapter_kind="none", adapter_id=None, layered=True), *LAYERED)


def test_version_1_files_still_decode(codec, decoder):
    """A file in the format icmh-hub 0.1 wrote: the same header and payload, the same picture."""
    data = encode(codec, make_image(40, 56, seed=2), pretrained=False)
    header, strings, shape = unpack(data)
    old = _version_1(header, strings, shape)
    assert header.variant == "sfma"  # version 1 did not record it
    assert unpack(old) == (dataclasses.replace(header, variant=None), strings, shape) and unpack(old)[0].layers == ("all",)
    assert torch.equal(decoder.decode(old).image, decoder.decode(data).image)
    for cut in range(len(old)):
        with pytest.raises(BitstreamError):
            unpack(old[:cut])


# -- version 3: names, method, layers bound to their file, tile grids ------------------------------


def test_names_are_checked_and_shown_escaped():
    for good in ("cls", "mbt2018-mean", "scalable-sfma", "a_b+c-d", "x" * 64):
        assert check_name(good, "task") == good
    assert check_name("sma->fma", "method") == "sma->fma"  # method names may hold ">" (the ablations)
    for bad, reason in (("x" * 100, "100 characters"), ("\x1b[2J", "only"), ("../x", "only"), (".x", "only"),
                        ("a.b", "only"), ("", "only"), ("tâsk", "only"), (3, "only"), ("sma->fma", "only")):
        with pytest.raises(BitstreamError, match=reason) as caught:
            check_name(bad, "task")
        assert "\x1b" not in str(caught.value) and "damaged" not in str(caught.value)
    with pytest.raises(BitstreamError, match=r"invalid task name '\\x1b\[2J'"):
        pack(_header(task="\x1b[2J"), *HYPERPRIOR)


def test_a_crafted_header_name_gets_the_true_reason():
    """A 100-character task or one holding terminal escapes, behind valid checksums."""
    from .test_crafted import _write

    header, strings, shape = unpack(pack(_header(), *HYPERPRIOR))
    with pytest.raises(BitstreamError, match="invalid task name 'aaaa.*100 characters"):
        unpack(_write(header, strings, shape, task="a" * 100))
    with pytest.raises(BitstreamError, match=r"invalid codec name '\\x1b\]0;x\\x07'") as caught:
        unpack(_write(header, strings, shape, codec="\x1b]0;x\x07"))
    assert "\x1b" not in str(caught.value)


def test_method_is_carried_and_defaults_to_sfma():
    header = _header(method="other-method")
    assert unpack(pack(header, *HYPERPRIOR))[0].method == "other-method"
    assert unpack(_version_2(_header(), *HYPERPRIOR))[0].method == "sfma"
    assert unpack(_version_1(_header(), *HYPERPRIOR))[0].method == "sfma"


def test_layers_are_bound_to_their_header_and_the_layers_before():
    """A layer spliced from another file is refused, though every checksum fits; strip still cuts."""
    layered = pack(_header(variant="scalable-sfma", layered=True), *LAYERED)
    other_image = pack(_header(variant="scalable-sfma", layered=True), [[b"other base"], [b"other enh"], [b"z" * 40]], (2, 1))
    base_end, other_end = len(strip(layered)), len(strip(other_image))
    with pytest.raises(BitstreamError, match="enhancement layer .*spliced"):
        unpack(layered[:base_end] + other_image[other_end:])
    human = pack(_header(task=None, adapter_kind="none", adapter_id=None), *HYPERPRIOR)
    cls = pack(_header(), *HYPERPRIOR)
    head, human_head = layer_bytes(cls)["header"], layer_bytes(human)["header"]
    with pytest.raises(BitstreamError, match="all layer .*spliced"):
        unpack(cls[:head] + human[human_head:])
    assert unpack(strip(layered))[0].layers == ("base",)


def test_version_2_files_still_decode(codec, decoder):
    """A file as icmh-hub 0.2 wrote it: the same header and payload, the same picture."""
    data = encode(codec, make_image(40, 56, seed=2), pretrained=False)
    header, strings, shape = unpack(data)
    old = _version_2(header, strings, shape)
    assert old[4] == 2 and unpack(old) == (header, strings, shape)
    assert torch.equal(decoder.decode(old).image, decoder.decode(data).image)
    layered = _header(variant="scalable-sfma", layered=True)
    assert unpack(_version_2(layered, *LAYERED)) == (layered, *LAYERED)
    assert unpack(strip(_version_2(layered, *LAYERED)))[0].layers == ("base",)


def test_tile_grids_are_checked_before_anything_is_decoded():
    header = _header(height=130, width=70, padded_height=192, padded_width=128, tile=(64, 64))
    parts = [HYPERPRIOR] * 6
    data = pack_tiles(header, parts)
    read, read_parts = unpack_tiles(data)
    assert read == header and len(read_parts) == 6
    assert [p[0].height for p in read_parts] == [64, 64, 64, 64, 2, 2] and read_parts[5][0].padded_height == 64
    assert read_parts[1][0].width == 6 and read_parts[1][0].padded_width == 64
    with pytest.raises(BitstreamError, match="tiled"):
        unpack(data)
    for tile, message in (((0, 64), "does not fit"), ((64, 71), "does not fit"), ((1, 1), "more than 4096 tiles")):
        with pytest.raises(BitstreamError, match=message):
            pack_tiles(dataclasses.replace(header, tile=tile), parts)
    with pytest.raises(BitstreamError, match="5 coded tiles for a grid of 6"):
        pack_tiles(header, parts[:5])
    body, records = _header_body(data)
    record = len(records) // 6
    with pytest.raises(BitstreamError, match="no layer"):
        unpack(_with_crc(body) + records[: 5 * record])
    with pytest.raises(BitstreamError, match="tile 1 comes before|spliced"):
        unpack(_with_crc(body) + records[record : 2 * record] + records[:record] + records[2 * record :])
