"""ChainEvent rows -> Parquet with readers' types: tz-aware timestamps, dictionary-coded categories."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_CATEGORY = pa.dictionary(pa.int32(), pa.string())
_TS = pa.timestamp("ms", tz="UTC")
CONCEPT = pa.struct(
    [
        ("vocabulary", pa.string()),
        ("code", pa.string()),
        ("label", pa.string()),
        ("counting_unit", pa.string()),
        ("source_code_system", pa.string()),
        ("source_code", pa.string()),
    ]
)
SCHEMA = pa.schema(
    [
        ("period", _CATEGORY),
        ("event_id", pa.string()),
        ("source_partner", _CATEGORY),
        ("source_event_type", _CATEGORY),
        ("source_system", _CATEGORY),
        ("event_time", _TS),
        ("event_date", pa.date32()),  # the local (Europe/Amsterdam) calendar date of event_time
        ("registration_time", _TS),
        ("chain_step", _CATEGORY),
        ("case_pseudonym", pa.string()),
        ("report_pseudonym", pa.string()),
        ("execution_pseudonym", pa.string()),
        ("person_pseudonym", pa.string()),
        ("person_pseudonym_source", _CATEGORY),
        ("skn_pseudonym", pa.string()),
        ("bsn_pseudonym", pa.string()),
        ("identity_flags", pa.list_(pa.string())),
        ("birth_year", pa.int16()),
        ("age_at_event", pa.int16()),
        ("sex", _CATEGORY),
        ("municipality_code", _CATEGORY),
        ("crime_municipality_code", _CATEGORY),
        ("sanction_days", pa.int32()),
        ("sanction_hours", pa.int32()),
        ("amount_eur", pa.float64()),
        ("concepts", pa.list_(CONCEPT)),
        ("mapping_version", _CATEGORY),
        ("pseudonym_key_id", _CATEGORY),
        ("processed_time", _TS),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


SCHEMA_IDS_KEY = "ketenstroom.schema_ids"  # Parquet key-value metadata: registry ids of the writer schemas


# the same columns with plain strings: converting to those and dictionary-encoding after is faster
_PLAIN = pa.schema(
    [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in SCHEMA]
)


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (missing keys are nulls) as a table of ``SCHEMA``, converted in C++ (no per-cell Python)."""
    return pa.Table.from_pylist(list(rows), schema=_PLAIN).cast(SCHEMA)


def write_table(table: pa.Table, schema_ids: Iterable[int] = ()) -> bytes:
    """One Parquet file (zstd), with the registry ids of the ChainEvent schemas its rows were read with."""
    ids = ",".join(str(i) for i in sorted(set(schema_ids)))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), SCHEMA_IDS_KEY: ids})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def to_parquet(rows: Sequence[dict[str, Any]], schema_ids: Iterable[int] = ()) -> bytes:
    """Encode rows (decoded ChainEvents plus period and Kafka position) as one Parquet file."""
    return write_table(to_table(rows), schema_ids)
