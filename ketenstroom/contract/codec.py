"""Avro encode/decode of single records with fastavro (schemaless; framing is in ``wire``)."""

from __future__ import annotations

import io
import re
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


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def decode(writer_schema: Any, payload: bytes | memoryview, reader_schema: Any | None = None) -> Any:
    """Decode schemaless Avro; DecodeError when the bytes do not match the writer schema.

    Bytes left over after the record mean it was written with another schema (or padded): refused too.
    """
    buf = io.BytesIO(payload)
    try:
        record = fastavro.schemaless_reader(buf, writer_schema, reader_schema)
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on corrupt input
        # fastavro's texts can name the buffer by its memory address: left out, so that one record
        # always gets the same error (dead letters of a re-delivery, `dlq list` examples, tests)
        text = _ADDRESS.sub("", repr(exc))
        if isinstance(exc, UnicodeDecodeError):  # its repr holds the string's bytes: a name, a BSN
            text = (
                f"UnicodeDecodeError({exc.encoding}: {exc.reason} at byte {exc.start} of {len(exc.object)})"
            )
        raise DecodeError(f"payload does not decode with its writer schema: {text}") from exc
    if buf.tell() != len(payload):
        raise DecodeError(
            f"payload has {len(payload) - buf.tell()} bytes after the record its writer schema describes",
            reason="trailing-bytes",
        )
    return record


def without_logical_types(parsed_schema: Any) -> Any:
    """The same schema with its logical types dropped: it reads the same bytes as plain values.

    Timestamps come back as int milliseconds and UUIDs as their strings, without building a datetime
    or UUID object per field; for a reader that hands the values on to Arrow, which takes them as they
    are, that saves most of the decode time.
    """

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "logicalType" and not k.startswith("__")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return fastavro.parse_schema(strip(parsed_schema), _force=True)


__all__ = ["decode", "encode", "encode_framed", "unframe", "without_logical_types"]
