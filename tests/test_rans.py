"""The bound on how far CompressAI's rANS decoder reads, the guards that apply it, and the
encoder-side checks (NaN and out-of-range latents, which make CompressAI's encoder loop forever)."""

from __future__ import annotations

import random

import pytest
import torch
from compressai import ans

from icmh_hub import BitstreamError, NumericalError, load
from icmh_hub.assemble import build_base
from icmh_hub.coding import code, encode
from icmh_hub.formats.rans import MAX_SYMBOL, bounded_decoding, checked_encoding, max_read, max_string_bytes, padded

from . import rans_replica
from .conftest import make_image


@pytest.fixture(scope="module")
def tables():
    """(cdfs, sizes, offsets) of both entropy models of a real codec."""
    model = build_base("mbt2018-mean", 1, pretrained=False)
    return [
        (m._quantized_cdf.tolist(), m._cdf_length.tolist(), m._offset.tolist())
        for m in (model.entropy_bottleneck, model.gaussian_conditional)
    ]


def _strings(rng: random.Random, count: int):
    """Strings of every kind a crafted file can hold: random, all 0xFF (the longest escape
    counts), runs of 0xFF with random bytes between, empty."""
    for _ in range(count):
        length = rng.choice([0, 1, 3, 4, 8, 13, 64, 200])
        kind = rng.choice(["random", "ff", "runs"])
        if kind == "random":
            yield bytes(rng.randrange(256) for _ in range(length))
        elif kind == "ff":
            yield b"\xff" * length
        else:
            yield bytes(rng.choice([0xFF, 0xFF, 0xFF, rng.randrange(256)]) for _ in range(length))


def test_replica_matches_the_decoder_and_the_bound_holds(tables):
    """The replica decodes what CompressAI decodes, symbol for symbol; the bytes it reads never
    exceed max_read, and the all-0xFF strings come close to it (the bound is not loose)."""
    rng = random.Random(0)
    decoder = ans.RansDecoder()
    closest = 0.0
    for cdfs, sizes, offsets in tables:
        for string in _strings(rng, 150):
            symbols = rng.choice([1, 2, 7, 50, 400])
            indexes = [rng.randrange(len(cdfs)) for _ in range(symbols)]
            values, read = rans_replica.decode(string, indexes, cdfs, sizes, offsets)
            assert read <= max_read(len(string), symbols), (string[:16], symbols)
            zeros = bytes(max_read(len(string), symbols) - len(string))
            assert decoder.decode_with_indexes(string + zeros, indexes, cdfs, sizes, offsets) == values
            closest = max(closest, read / max_read(len(string), symbols))
    assert closest > 0.8


def test_padding_changes_nothing_for_real_strings(tables):
    """Strings the encoder wrote decode to the same symbols with the padding as without it, and
    are never longer than max_string_bytes, even for the largest symbols the encoder takes.
    (At least 5 symbols: CompressAI's encoder writes its flush before its buffer for fewer; every
    latent of every codec here has more.)"""
    rng = random.Random(1)
    encoder, decoder = ans.RansEncoder(), ans.RansDecoder()
    for cdfs, sizes, offsets in tables:
        for symbols in (5, 40, 300):
            indexes = [rng.randrange(len(cdfs)) for _ in range(symbols)]
            for values in (
                [rng.randint(-3, 3) for _ in range(symbols)],
                [rng.choice([MAX_SYMBOL - 1, -(MAX_SYMBOL - 1)]) for _ in range(symbols)],
            ):
                string = encoder.encode_with_indexes(values, indexes, cdfs, sizes, offsets)
                assert len(string) <= max_string_bytes(symbols)
                plain = decoder.decode_with_indexes(string + bytes(64), indexes, cdfs, sizes, offsets)
                assert plain == values
                assert decoder.decode_with_indexes(padded(string, symbols), indexes, cdfs, sizes, offsets) == values


def test_padded_refuses_what_no_encoder_writes():
    assert padded(b"", 3) == bytes(max_read(0, 3))
    with pytest.raises(BitstreamError, match="longer than any encoder writes"):
        padded(b"x" * (max_string_bytes(10) + 1), 10)
    with pytest.raises(BitstreamError, match="not bytes"):
        padded(7, 10)


def test_guards_leave_the_model_as_it_was_and_decode_the_same():
    codec = load("mbt2018-mean", "cls", 1, pretrained=False)
    base = codec.base
    before = {id(m): dict(vars(m)) for m in base.modules()}
    x = make_image(64, 128)
    with torch.no_grad():
        out = codec.compress(x)
        plain = codec.decompress(out["strings"], out["shape"])["x_hat"]
        with bounded_decoding(base), checked_encoding(base):
            assert base.entropy_bottleneck.entropy_coder is not before[id(base.entropy_bottleneck)]["entropy_coder"]
            assert codec.compress(x)["strings"] == out["strings"]
            guarded = codec.decompress(out["strings"], out["shape"])["x_hat"]
    assert torch.equal(plain, guarded)
    assert {id(m): dict(vars(m)) for m in base.modules()} == before


def test_the_autoregressive_decoder_gets_padded_strings():
    """mbt2018 and cheng2020 decode y with a stream decoder of their own: the guard pads the
    string they hand it for all M x H x W symbols."""
    model = build_base("mbt2018", 1, pretrained=False)
    seen = []
    original = type(model)._decompress_ar

    def spy(self, y_string, y_hat, *args):
        seen.append((len(y_string), y_hat.size(1)))
        return original(self, y_string, y_hat, *args)

    with torch.no_grad():
        out = model.compress(make_image(64, 64))
        type(model)._decompress_ar = spy
        try:
            with bounded_decoding(model):
                model.decompress(out["strings"], out["shape"])
        finally:
            type(model)._decompress_ar = original
    (length, channels), = seen
    assert length == max_read(len(out["strings"][0][0]), channels * 4 * 4)


def test_nan_adapters_are_refused_before_entropy_coding():
    """An adapter full of NaN used to hang CompressAI's encoder for minutes."""
    codec = load("mbt2018-mean", "cls", 1, pretrained=False)
    with torch.no_grad():
        for parameter in codec.adapter_sets["cls"].parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(NumericalError, match="NaN or infinite latents"):
        encode(codec, make_image(64, 64), pretrained=False)
    with pytest.raises(NumericalError):
        code(codec, make_image(64, 64))


def test_latents_beyond_the_coder_and_nan_scales_are_refused():
    codec = load("mbt2018-mean", None, 1, pretrained=False)
    last = [m for m in codec.base.g_a.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(1e9)
    with pytest.raises(NumericalError, match="beyond what the entropy coder takes"):
        encode(codec, make_image(64, 64), pretrained=False)
    codec = load("mbt2018-mean", None, 1, pretrained=False)
    with torch.no_grad():
        [m for m in codec.base.h_s.modules() if isinstance(m, torch.nn.Conv2d)][-1].bias.fill_(float("nan"))
    with pytest.raises(NumericalError, match="scales"):
        encode(codec, make_image(64, 64), pretrained=False)
