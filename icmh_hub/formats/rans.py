"""CompressAI's rANS coder, kept inside its buffers and its range whatever a file or a codec holds.

CompressAI's entropy coder (C++, ``compressai/cpp_exts/rans/rans_interface.cpp``) trusts its
input. Its decoder reads 32-bit words from a string without knowing the string's length, so a
string too short for the symbols it is asked for makes it read past the end of the buffer
(a crash, or other memory decoded as latents). Its encoder loops forever on a symbol of 2**27
or more (the loop that counts a large value's 4-bit pieces shifts by 32 bits, which x86 reads
as a shift by 0), and NaN latents become such symbols.

**How far the decoder reads.** Its state is 64 bits; a 32-bit word is read (into the low bits)
whenever the state falls below 2**31. Decoding a symbol (``Rans64DecAdvance``) reads at most
one word. An escape symbol (a value outside its table) then takes 4-bit pieces from the low
bits (``Rans64DecGetBits``; a word per 8 pieces at most, plus one): a count, continued for as
long as a piece is 15, then as many raw pieces as the count says. Before its first word read a
count takes at most 9 pieces; after the string's end the words read are zero, so the next piece
ends the count: at most 10 count pieces there, hence at most 149 raw ones. Inside the string,
each data word read adds at most 8 count pieces. So G, all pieces taken, is at most
16 (10 N + 8 D) for N symbols and D data words, the words read at most 2 + 2 N + G / 8, and a
string of L bytes decoding N symbols is read for at most ``max_read(L, N)`` = 16 L + 88 N + 64
bytes (tests/test_rans.py checks the bound with a replica of the decoder that counts its reads,
and the replica against the decoder, symbol for symbol).

So ``bounded_decoding`` hands every string to the decoder followed by zero bytes up to that
bound (a decoder that stays inside the string decodes exactly what it did without them), with
N the exact number of symbols it is asked for. A string longer than CompressAI's encoder ever
writes for N symbols (52 bits each at most, plus its 8-byte flush) is refused first, so the
padding stays proportional to the symbols, and those to the image size in the header.
``checked_encoding`` refuses, before any symbol reaches the encoder, latents that are not finite
or out of its range, and non-finite scales.

Both patch the entropy models of one model for the duration of a ``with`` block (instance
attributes, removed afterwards), at the two places every CompressAI decoding path goes through:
the entropy coder of each entropy model (``decode_with_indexes``), and the autoregressive
models' ``_decompress_ar`` (mbt2018, cheng2020), which make their own stream decoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._compressai import compressai  # noqa: F401  (first, without its import warning)
from compressai.entropy_models import EntropyModel, GaussianConditional
from compressai.entropy_models.entropy_models import _EntropyCoder

from ..errors import BitstreamError, NumericalError

READ_PER_BYTE, READ_PER_SYMBOL, READ_FIXED = 16, 88, 64
MAX_BITS_PER_SYMBOL = 52  # 16 for the symbol, 4 for a count of at most 8, 32 raw bits
FLUSH_BYTES = 8
MAX_SYMBOL = 1 << 26  # |latent - mean| the encoder takes (it hangs from 2**27 on)


def max_read(length: int, symbols: int) -> int:
    """Bytes the decoder can read from a ``length``-byte string while decoding ``symbols`` symbols."""
    return READ_PER_BYTE * length + READ_PER_SYMBOL * symbols + READ_FIXED


def max_string_bytes(symbols: int) -> int:
    """The longest string CompressAI's encoder writes for ``symbols`` symbols."""
    return (MAX_BITS_PER_SYMBOL * symbols + 31) // 32 * 4 + FLUSH_BYTES + 4


def padded(string: Any, symbols: int) -> bytes:
    """``string`` followed by the zero bytes the decoder may read behind it for ``symbols`` symbols."""
    if not isinstance(string, bytes):
        raise BitstreamError(f"damaged .icmh file: a latent string is a {type(string).__name__}, not bytes")
    if len(string) > max_string_bytes(symbols):
        raise BitstreamError(
            f"damaged .icmh file: a latent string of {len(string)} bytes is longer than any encoder "
            f"writes for its {symbols} symbols (at most {max_string_bytes(symbols)})"
        )
    return string.ljust(max_read(len(string), symbols), b"\0")


class _BoundedCoder:
    """Stands in for an entropy model's ``_EntropyCoder``: decodes padded strings, encodes as it did.
    (It is its own ``_decoder``, which GaussianMixtureConditional calls directly.)"""

    def __init__(self, coder: _EntropyCoder) -> None:
        self.coder, self.name, self._decoder = coder, coder.name, self

    def encode_with_indexes(self, *args: Any, **kwargs: Any) -> Any:
        return self.coder.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, string: Any, indexes: list, *args: Any, **kwargs: Any) -> list:
        return self.coder._decoder.decode_with_indexes(padded(string, len(indexes)), indexes, *args, **kwargs)


@contextlib.contextmanager
def _patched(changes: list[tuple[nn.Module, str, Any]]) -> Iterator[None]:
    """Set instance attributes for the block; afterwards, what was there before (or nothing)."""
    saved = [(module, name, module.__dict__.get(name, _MISSING)) for module, name, _ in changes]
    try:
        for module, name, value in changes:
            object.__setattr__(module, name, value)
        yield
    finally:
        for module, name, value in reversed(saved):
            if value is _MISSING:
                object.__delattr__(module, name)
            else:
                object.__setattr__(module, name, value)


_MISSING = object()


def bounded_decoding(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Inside the block, ``model`` decodes untrusted strings without reading past them."""
    changes: list[tuple[nn.Module, str, Any]] = []
    for module in model.modules():
        coder = module.__dict__.get("entropy_coder")
        if isinstance(coder, _EntropyCoder):
            changes.append((module, "entropy_coder", _BoundedCoder(coder)))
        if callable(getattr(type(module), "_decompress_ar", None)):
            changes.append((module, "_decompress_ar", _bounded_ar(module._decompress_ar)))
    return _patched(changes)


def _bounded_ar(decompress_ar):
    """CompressAI's ``_decompress_ar(y_string, y_hat, params, height, width, ...)`` decodes
    ``y_hat.size(1) * height * width`` symbols from ``y_string``."""

    def bounded(y_string, y_hat, params, height, width, *args, **kwargs):
        return decompress_ar(padded(y_string, y_hat.size(1) * height * width), y_hat, params, height, width, *args, **kwargs)

    return bounded


def checked_encoding(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Inside the block, ``model`` refuses to entropy-code latents or scales the coder cannot take."""
    changes: list[tuple[nn.Module, str, Any]] = []
    for module in model.modules():
        if isinstance(module, EntropyModel):
            changes.append((module, "quantize", _checked_quantize(module.quantize)))
        if isinstance(module, GaussianConditional):
            changes.append((module, "build_indexes", _checked_indexes(module.build_indexes)))
    return _patched(changes)


def _checked_quantize(quantize):
    def checked(inputs: torch.Tensor, mode: str, means: torch.Tensor | None = None) -> torch.Tensor:
        if mode == "symbols":
            centred = inputs if means is None else inputs - means
            if not torch.isfinite(centred).all():
                raise NumericalError(
                    "the codec computed NaN or infinite latents, which cannot be entropy-coded; its weights or "
                    "adapters hold non-finite values (check the adapter file and the base weights)"
                )
            largest = float(centred.abs().max()) if centred.numel() else 0.0
            if largest >= MAX_SYMBOL:
                raise NumericalError(
                    f"the codec computed latents up to {largest:.3g}, beyond what the entropy coder takes "
                    f"(below {MAX_SYMBOL}); its weights or adapters are broken"
                )
        return quantize(inputs, mode, means)

    return checked


def _checked_indexes(build_indexes):
    def checked(scales: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(scales).all():
            raise NumericalError(
                "the codec predicted NaN or infinite scales for its latents; its weights or adapters hold "
                "non-finite values (check the adapter file and the base weights)"
            )
        return build_indexes(scales)

    return checked
