"""Avro's binary encoding of single values, for the compiled fast paths of ``publish`` and the processor.

Each function writes exactly the bytes fastavro's ``schemaless_writer`` writes for the value (the fast
paths' unit tests compare them byte for byte); callers have checked the value's type.
"""

from __future__ import annotations


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints of 0..2**14-1, and 14-bit groups with both continuation bits set: a millisecond timestamp is
# two of those and one table varint, instead of a loop over six 7-bit groups.
_VARINT = tuple(_varint(n) for n in range(1 << 14))
_MORE = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14))
LENGTHS = tuple(_VARINT[2 * n] for n in range(1 << 13))  # string lengths: zig-zag of n is 2n


def zigzag(n: int) -> bytes:
    """An Avro int/long: zig-zag, then a base-128 varint, low group first."""
    n = (n << 1) ^ (n >> 63)
    if n < 1 << 14:
        return _VARINT[n]
    if n < 1 << 28:
        return _MORE[n & 0x3FFF] + _VARINT[n >> 14]
    if n < 1 << 42:
        return _MORE[n & 0x3FFF] + _MORE[(n >> 14) & 0x3FFF] + _VARINT[n >> 28]
    return _varint(n)


def string_bytes(text: str) -> bytes:
    """An Avro string: its UTF-8 length, then the bytes. A lone surrogate raises UnicodeEncodeError."""
    data = text.encode()
    n = len(data)
    return (LENGTHS[n] if n < 1 << 13 else zigzag(n)) + data
