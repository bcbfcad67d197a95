"""Avro encode/decode of single records with fastavro (schemaless; framing is in ``wire``)."""

from __future__ import annotations

import io
from typing import Any

import fastavro

from ketenstroom.contract.wire import frame, unframe
from ketenstroom.errors import DecodeError


def encode(parsed_schema: Any, record: dict[str, Any]) -> bytes:
    """Schemaless Avro bytes for one record."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()


def encode_framed(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    """Confluent-framed Avro bytes for one record."""
    return frame(schema_id, encode(parsed_schema, record))


def decode(writer_schema: Any, payload: bytes | memoryview, reader_schema: Any | None = None) -> Any:
    """Decode schemaless Avro; DecodeError when the bytes do not match the writer schema."""
    try:
        return fastavro.schemaless_reader(io.BytesIO(payload), writer_schema, reader_schema)
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on corrupt input
        raise DecodeError(f"payload does not decode with its writer schema: {exc!r}") from exc


__all__ = ["decode", "encode", "encode_framed", "unframe"]
