"""What sealing reads of a data file: its manifest entry, counts, event ids and Kafka positions."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ketenstroom.contract.snapshots import FileEntry, sha256
from sinks.dedup import id_array
from sinks.parquet import SCHEMA_IDS_KEY

_STATS_COLUMNS = [
    "event_id",
    "source_partner",
    "source_event_type",
    "kafka_partition",
    "kafka_offset",
    "mapping_version",
    "pseudonym_key_id",
]


@dataclass
class Stats:
    """Counts for the manifest, accumulated over a revision's files."""

    per_partner: Counter[str] = field(default_factory=Counter)
    per_type: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last, rows]
    schema_ids: set[int] = field(default_factory=set)
    mapping_versions: set[str] = field(default_factory=set)
    key_ids: set[str] = field(default_factory=set)

    def merge(self, other: Stats) -> None:
        self.per_partner.update(other.per_partner)
        for partner, counts in other.per_type.items():
            self.per_type[partner].update(counts)
        for p, (first, last, n) in other.offsets.items():
            seen = self.offsets.get(p)
            self.offsets[p] = (
                [first, last, n] if seen is None else [min(seen[0], first), max(seen[1], last), seen[2] + n]
            )
        self.schema_ids |= other.schema_ids
        self.mapping_versions |= other.mapping_versions
        self.key_ids |= other.key_ids

    def add(self, table: pa.Table, schema_ids: Iterable[int]) -> None:
        self.schema_ids.update(schema_ids)
        if table.num_rows == 0:
            return
        plain = {name: pc.cast(table[name], pa.string()) for name in ("source_partner", "source_event_type")}
        counts = (
            pa.table(plain).group_by(["source_partner", "source_event_type"]).aggregate([([], "count_all")])
        )
        for row in counts.to_pylist():
            self.per_partner[row["source_partner"]] += row["count_all"]
            self.per_type[row["source_partner"]][row["source_event_type"]] += row["count_all"]
        ranges = table.group_by("kafka_partition").aggregate(
            [("kafka_offset", "min"), ("kafka_offset", "max"), ([], "count_all")]
        )
        for row in ranges.to_pylist():
            p = row["kafka_partition"]
            first, last, n = row["kafka_offset_min"], row["kafka_offset_max"], row["count_all"]
            if p in self.offsets:
                seen = self.offsets[p]
                self.offsets[p] = [min(seen[0], first), max(seen[1], last), seen[2] + n]
            else:
                self.offsets[p] = [first, last, n]
        for name, into in (("mapping_version", self.mapping_versions), ("pseudonym_key_id", self.key_ids)):
            into.update(v for v in pc.unique(pc.cast(table[name], pa.string())).to_pylist() if v is not None)


def _schema_ids(metadata: pq.FileMetaData) -> list[int]:
    raw = (metadata.metadata or {}).get(SCHEMA_IDS_KEY.encode(), b"")
    return [int(x) for x in raw.decode().split(",") if x]


@dataclass
class FileRead:
    """One data file as read for sealing: its entry, counts, event ids and Kafka positions."""

    entry: FileEntry
    stats: Stats
    ids: np.ndarray
    schema_ids: list[int]
    positions: np.ndarray  # partition << 40 | offset: one sortable Kafka position a row


def read_file(path: str, data: bytes) -> FileRead:
    parquet = pq.ParquetFile(io.BytesIO(data))
    table = parquet.read(columns=_STATS_COLUMNS)
    stats = Stats()
    schema_ids = _schema_ids(parquet.metadata)
    stats.add(table, schema_ids)
    entry = FileEntry(path=path, sha256=sha256(data), rows=table.num_rows, bytes=len(data))
    positions = (table["kafka_partition"].to_numpy().astype(np.int64) << 40) | table[
        "kafka_offset"
    ].to_numpy().astype(np.int64)
    return FileRead(entry, stats, id_array(table["event_id"]), schema_ids, positions)
