"""A data file's counts kept in its footer (``sinks.stats.write_with_stats``) are the counts sealing
would compute from its columns: sealing reads only the event ids and Kafka positions of such files."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from sinks.parquet import SCHEMA, write_table
from sinks.stats import STATS_KEY, Stats, read_file, write_counted, write_with_stats
from synthetic.period import period_events


def test_footer_counts_equal_the_counts_from_the_columns() -> None:
    table = period_events(4000, SCHEMA, seed=3)
    table = table.set_column(
        table.schema.get_field_index("kafka_partition"),
        "kafka_partition",
        table["kafka_partition"].cast("int32"),
    )
    with_stats = write_with_stats(table, [7, 3])
    plain = write_table(table, [7, 3])
    assert STATS_KEY.encode() in (pq.ParquetFile(io.BytesIO(with_stats)).metadata.metadata or {})
    kept, counted = read_file("a", with_stats), read_file("a", plain)
    for name in ("per_partner", "per_type", "offsets", "schema_ids", "mapping_versions", "key_ids"):
        assert getattr(kept.stats, name) == getattr(counted.stats, name), name
    assert sum(rows for _first, _last, rows in kept.stats.offsets.values()) == table.num_rows
    assert kept.stats.schema_ids == counted.stats.schema_ids == {3, 7}
    assert kept.stats.per_partner.total() == table.num_rows and len(kept.stats.per_partner) >= 5
    assert (kept.ids == counted.ids).all() and (kept.positions == counted.positions).all()
    assert kept.entry.rows == counted.entry.rows == table.num_rows
    # deterministic: the same rows give the same bytes (byte-identical revisions)
    assert write_with_stats(table, [3, 7]) == with_stats
    # rows read back from such a file and rewritten (sealing drops duplicates) get their own counts
    half = pq.read_table(io.BytesIO(with_stats)).slice(0, 1000)
    rewritten = read_file("b", write_with_stats(half, [3, 7]))
    assert rewritten.stats.per_partner.total() == 1000 == rewritten.entry.rows
    counted_half = Stats()
    counted_half.add(half, [3, 7])
    assert rewritten.stats.to_json() == counted_half.to_json()
    # written without counts, a read-back table never passes the old file's counts on
    assert STATS_KEY.encode() not in (
        pq.ParquetFile(io.BytesIO(write_table(half, [3]))).metadata.metadata or {}
    )


def test_counts_returned_with_a_write_are_those_read_back() -> None:
    """Sealing merges the counts ``write_counted`` returns for a rewritten file instead of parsing the
    file back: they must be exactly what ``read_file`` reads, or the manifest would change."""
    table = period_events(3000, SCHEMA, seed=5).slice(500, 2000)
    data, counts = write_counted(table, [9, 4, 9])
    assert data == write_with_stats(table, [4, 9])
    back = read_file("c", data)
    for name in ("per_partner", "per_type", "offsets", "schema_ids", "mapping_versions", "key_ids"):
        assert getattr(counts, name) == getattr(back.stats, name), name
    assert counts.to_json() == back.stats.to_json() and counts.schema_ids == {4, 9}
