"""A Python replica of CompressAI's ``RansDecoder.decode_with_indexes`` that counts the bytes it
reads (``compressai/cpp_exts/rans/rans_interface.cpp`` with ``third_party/ryg_rans/rans64.h``,
read on CompressAI's GitHub). Words beyond the data read as zero, as a zero-padded string gives
them; the tests check the replica against the real decoder symbol for symbol."""

from __future__ import annotations

import struct

_MASK64 = (1 << 64) - 1
_LOW = 1 << 31  # RANS64_L
_PRECISION = 16
_BYPASS_BITS, _BYPASS_MAX = 4, 15


def decode(data: bytes, indexes: list[int], cdfs: list[list[int]], sizes: list[int], offsets: list[int]) -> tuple[list[int], int]:
    """(decoded values, bytes read from the start of ``data``)."""
    data = data + bytes(-len(data) % 4)  # a last partial word reads as if zero-padded
    words = struct.unpack(f"<{len(data) // 4}I", data)
    position = 0

    def word() -> int:
        nonlocal position
        value = words[position] if position < len(words) else 0
        position += 1
        return value

    def get_bits(x: int) -> tuple[int, int]:  # Rans64DecGetBits
        value, x = x & _BYPASS_MAX, x >> _BYPASS_BITS
        if x < _LOW:
            x = ((x << 32) | word()) & _MASK64
        return x, value

    x = word() | (word() << 32)  # Rans64DecInit
    out = []
    for index in indexes:
        cdf, size = cdfs[index], sizes[index]
        max_value = size - 2
        cum = x & ((1 << _PRECISION) - 1)
        symbol = next(j for j in range(size) if cdf[j] > cum) - 1
        start, freq = cdf[symbol], cdf[symbol + 1] - cdf[symbol]
        x = (freq * (x >> _PRECISION) + cum - start) & _MASK64  # Rans64DecAdvance
        if x < _LOW:
            x = ((x << 32) | word()) & _MASK64
        value = symbol
        if value == max_value:  # bypass mode
            x, piece = get_bits(x)
            count = piece
            while piece == _BYPASS_MAX:
                x, piece = get_bits(x)
                count += piece
            raw = 0
            for j in range(count):
                x, piece = get_bits(x)
                raw = (raw | (piece << ((j * _BYPASS_BITS) & 31))) & 0xFFFFFFFF  # x86 masks the shift
            raw = raw - (1 << 32) if raw & 0x80000000 else raw
            value = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + max_value
            value = ((value + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        out.append(value + offsets[index])
    return out, 4 * position
