"""Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then schemaless Avro."""

from __future__ import annotations

import struct

from ketenstroom.errors import DecodeError

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size


def frame(schema_id: int, payload: bytes) -> bytes:
    """Prefix an Avro payload with the Confluent header."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + payload


def header(schema_id: int) -> bytes:
    """The 5-byte header alone, for writers that stream the payload after it."""
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def unframe(data: bytes | None) -> tuple[int, memoryview]:
    """Split framed bytes into (schema id, payload); DecodeError names what is wrong."""
    if data is None:
        raise DecodeError("record has no value (tombstone); raw topics never carry tombstones")
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"record is {len(data)} bytes, shorter than the 5-byte Confluent header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise DecodeError(f"record starts with byte {magic}, not the Confluent magic byte 0")
    return schema_id, memoryview(data)[HEADER_SIZE:]
