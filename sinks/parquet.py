"""ChainEvent rows -> Parquet with readers' types: tz-aware timestamps, dictionary-coded categories."""

from __future__ import annotations

import io
from collections.abc import Sequence
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
        ("registration_time", _TS),
        ("chain_step", _CATEGORY),
        ("case_pseudonym", pa.string()),
        ("report_pseudonym", pa.string()),
        ("execution_pseudonym", pa.string()),
        ("person_pseudonym", pa.string()),
        ("person_pseudonym_source", _CATEGORY),
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


def to_parquet(rows: Sequence[dict[str, Any]]) -> bytes:
    """Encode rows (decoded ChainEvents plus period and Kafka position) as one Parquet file."""
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
