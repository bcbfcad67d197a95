"""ChainEvent rows -> Parquet with readers' types: tz-aware timestamps, dictionary-coded categories."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ketenstroom.contract.chain_event import chain_event_avsc

_CATEGORY = pa.dictionary(pa.int32(), pa.string())
_TS = pa.timestamp("ms", tz="UTC")
#: ChainEvent strings with few distinct values: dictionary-encoded in Parquet (and for readers).
CATEGORIES = frozenset(
    {
        "source_partner",
        "source_event_type",
        "source_system",
        "chain_step",
        "person_pseudonym_source",
        "sex",
        "municipality_code",
        "crime_municipality_code",
        "mapping_version",
        "pseudonym_key_id",
    }
)
#: Integers that fit a narrower type than Avro's int.
NARROW = {"birth_year": pa.int16(), "age_at_event": pa.int16()}
_PRIMITIVE = {
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
}


def arrow_type(avro: Any) -> pa.DataType:
    """The Arrow type of an Avro type (nullable unions become nullable fields); unknown ones refused."""
    if isinstance(avro, list):
        (inner,) = [t for t in avro if t != "null"]
        return arrow_type(inner)
    kind = avro if isinstance(avro, str) else avro.get("logicalType") or avro["type"]
    found: pa.DataType | None = {**_PRIMITIVE, "timestamp-millis": _TS, "uuid": pa.string()}.get(kind)
    if found is None and kind == "array":
        found = pa.list_(arrow_type(avro["items"]))
    elif found is None and kind == "record":
        found = pa.struct([(f["name"], arrow_type(f["type"])) for f in avro["fields"]])
    if found is None:
        raise TypeError(f"no snapshot column type for Avro type {avro!r}; extend sinks/parquet.py")
    return found


def snapshot_schema(avsc: dict[str, Any]) -> pa.Schema:
    """The snapshot's columns: every ChainEvent field, plus what the sink adds (period, local date,
    Kafka position)."""
    fields: list[tuple[str, pa.DataType]] = [("period", _CATEGORY)]
    for field in avsc["fields"]:
        name = field["name"]
        typ = _CATEGORY if name in CATEGORIES else NARROW.get(name) or arrow_type(field["type"])
        fields.append((name, typ))
        if name == "event_time":
            fields.append(("event_date", pa.date32()))  # the local (Europe/Amsterdam) calendar date
    return pa.schema([*fields, ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())])


SCHEMA = snapshot_schema(chain_event_avsc())
CONCEPT = SCHEMA.field("concepts").type.value_type


SCHEMA_IDS_KEY = "ketenstroom.schema_ids"  # Parquet key-value metadata: registry ids of the writer schemas
STATS_KEY = "ketenstroom.stats"  # Parquet key-value metadata: the file's counts (``sinks.stats``)


# the same columns with plain strings: converting to those and dictionary-encoding after is faster
_PLAIN = pa.schema(
    [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in SCHEMA]
)


PLAIN = _PLAIN
#: the ChainEvent's own columns (without what the sink adds), plain strings: what decoding yields
EVENT_COLUMNS = pa.schema(
    [f for f in _PLAIN if f.name not in ("period", "event_date", "kafka_partition", "kafka_offset")]
)


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (missing keys are nulls) as a table of ``SCHEMA``, converted in C++ (no per-cell Python)."""
    return pa.Table.from_pylist(list(rows), schema=_PLAIN).cast(SCHEMA)


def write_table(
    table: pa.Table, schema_ids: Iterable[int] = (), metadata: dict[str, str] | None = None
) -> bytes:
    """One Parquet file (zstd), with the registry ids of the ChainEvent schemas its rows were read with
    (and any other key-value ``metadata``, e.g. the file's statistics: ``sinks.stats``)."""
    ids = ",".join(str(i) for i in sorted(set(schema_ids)))
    ours = {k.encode(): v.encode() for k, v in {SCHEMA_IDS_KEY: ids, **(metadata or {})}.items()}
    # a table read back from a data file carries that file's keys (as bytes): ours replace them, and
    # its counts never pass on to a file of other rows (``sinks.stats.write_with_stats`` writes new ones)
    inherited = {k: v for k, v in (table.schema.metadata or {}).items() if k != STATS_KEY.encode()}
    table = table.replace_schema_metadata({**inherited, **ours})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def to_parquet(rows: Sequence[dict[str, Any]], schema_ids: Iterable[int] = ()) -> bytes:
    """Encode rows (decoded ChainEvents plus period and Kafka position) as one Parquet file."""
    return write_table(to_table(rows), schema_ids)
