"""Sealed period snapshots: revisions, manifests, the latest pointer, and verification.

Layout below the store's root (deterministic names; a retry overwrites, it never adds)::

    staging/<period>/part-p<PPP>-o<OFFSET>.parquet     the sink's incremental files; not for readers
    snapshots/<period>/r<N>/data/r<K>-p<PPP>-o<OFFSET>.parquet
                                                       revision N's rows (K: the revision that added them)
    snapshots/<period>/r<N>/manifest.json              written last, create-only: the revision exists
    snapshots/<period>/r<N>/tables/chain.parquet       one row per case pseudonym (linked microdata)
    snapshots/<period>/r<N>/tables/person.parquet      one row per person pseudonym
    snapshots/<period>/r<N>/tables/manifest.json       the tables' own manifest (create-only, last)
    snapshots/<period>/latest.json                     pointer to the newest manifest (a convenience)

A revision is visible only when its manifest exists; its data directory is self-contained (revision N
holds copies of N-1's files plus the rows that arrived since), so ``r<N>/data/*.parquet`` is the whole
period as known at sealing. Sealing revision N (``Sealer.seal``), in this order:

1. collect the rows: revision N-1's, files already in ``r<N>/data`` from an interrupted attempt, and
   the staged files; keep each event id once: a sealed row before an interrupted attempt's before a
   staged one, and among staged copies the one at the lowest (partition, offset);
2. move a staged file that keeps all its rows into ``r<N>/data`` unchanged; write the kept rows of any
   other under the name of its first kept offset, then delete the staged file (a name that can only ever
   hold those rows, so a resumed seal rewrites the same bytes);
3. copy revision N-1's data files into ``r<N>/data`` (earlier revisions are never touched);
4. write ``manifest.json`` create-only, listing every file with its sha256 and row count, rows per
   partner and event type, offsets covered per partition, schema ids, mapping and key versions;
5. point ``latest.json`` at it.

A crash anywhere before 4 leaves no visible revision and the next seal resumes; a crash after 4 leaves a
complete one. The chain and person tables are derived from a sealed revision afterwards
(``sinks/tables.py``), with a manifest of their own that names the revision's manifest by sha256: a
revision is complete without them, and they can always be rebuilt from it.

Statuses follow CBS: r0 ``provisional``, later ones ``revised``; the first revision sealed on or after
``period end + final_after`` is ``final``, and nothing is added to a period after that (rows arriving
later stay in ``staging/`` and are reported as held, never dropped).

One sealer per store: run the sink's sealing in one instance (``--seal``, the default) and start extra
instances of the same group with ``--no-seal``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from ketenstroom.adapters.objectstore import ObjectExistsError, ObjectStore
from ketenstroom.crashpoints import crash_point
from ketenstroom.errors import StorageError
from ketenstroom.settings import SnapshotSettings
from sinks.parquet import SCHEMA_IDS_KEY, write_table
from sinks.periods import period_bounds

log = logging.getLogger("ketenstroom.snapshot")

MANIFEST_FORMAT = "ketenstroom.snapshot-manifest/1"
Status = Literal["provisional", "revised", "final"]
_STAGED = re.compile(r"/part-p(\d{3})-o(\d{20})\.parquet$")
_DATA = re.compile(r"/r(\d+)-p\d{3}-o\d{20}\.parquet$")
_STATS_COLUMNS = [
    "event_id",
    "source_partner",
    "source_event_type",
    "kafka_partition",
    "kafka_offset",
    "mapping_version",
    "pseudonym_key_id",
]


def staging_name(period: str, partition: int, first_offset: int) -> str:
    return f"staging/{period}/part-p{partition:03d}-o{first_offset:020d}.parquet"


def revision_prefix(period: str, revision: int) -> str:
    return f"snapshots/{period}/r{revision}/"


def manifest_name(period: str, revision: int) -> str:
    return revision_prefix(period, revision) + "manifest.json"


def latest_name(period: str) -> str:
    return f"snapshots/{period}/latest.json"


def _data_name(period: str, revision: int, origin: int, partition: int, offset: int) -> str:
    return f"{revision_prefix(period, revision)}data/r{origin}-p{partition:03d}-o{offset:020d}.parquet"


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int
    bytes: int


class OffsetRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    first: int
    last: int
    rows: int


class _Document(BaseModel):
    """A JSON document written once (create-only) and read back as it was."""

    model_config = ConfigDict(frozen=True)

    def to_bytes(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()


class Manifest(_Document):
    """What a sealed revision holds; its existence is what makes the revision visible."""

    format: str = MANIFEST_FORMAT
    period: str
    period_start: datetime
    period_end: datetime
    revision: int
    status: Status
    sealed_at: datetime
    grace_days: float
    final_after_days: float
    previous_manifest_sha256: str | None
    files: list[FileEntry]
    rows: int
    rows_new: int
    duplicates_dropped: int
    rows_per_partner: dict[str, int]
    rows_per_event_type: dict[str, dict[str, int]]
    offsets: dict[str, OffsetRange]
    schema_ids: list[int]
    mapping_versions: list[str]
    pseudonym_key_ids: list[str]

    @property
    def prefix(self) -> str:
        return revision_prefix(self.period, self.revision)


TABLES_FORMAT = "ketenstroom.snapshot-tables/1"


def tables_manifest_name(period: str, revision: int) -> str:
    return revision_prefix(period, revision) + "tables/manifest.json"


class TablesManifest(_Document):
    """The linked chain and person tables derived from one sealed revision."""

    format: str = TABLES_FORMAT
    period: str
    revision: int
    revision_manifest_sha256: str
    built_at: datetime
    events_read: int  # this revision's rows plus the earlier periods' rows read for the cases' history
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class SealPolicy:
    """When a period is sealed (end + grace) and when it becomes final (end + final_after)."""

    grace: timedelta = timedelta(days=14)
    final_after: timedelta = timedelta(days=365)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @classmethod
    def from_settings(cls, settings: SnapshotSettings, now: datetime | None = None) -> SealPolicy:
        clock: Callable[[], datetime] = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
        return cls(
            grace=timedelta(days=settings.grace_days),
            final_after=timedelta(days=settings.final_after_days),
            clock=clock,
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_UUID_HEX_POSITIONS = [i for i in range(36) if i not in (8, 13, 18, 23)]


def _id_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Event ids (canonical UUID strings, as the ChainEvent contract has them) as an (n, 2) uint64 array.

    Vectorised: 16 bytes a row instead of a Python object, so a period of millions of events is
    deduplicated in a few hundred MB.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.empty((0, 2), dtype=np.uint64)
    arr = arr.cast(pa.string())
    if arr.null_count:
        raise StorageError("a snapshot row has no event_id")
    lo, hi = (v.as_py() for v in pc.min_max(pc.binary_length(arr)).values())
    if lo != 36 or hi != 36:
        raise StorageError("a snapshot row's event_id is not a canonical UUID string")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    text = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=36 * len(arr), offset=int(offsets[0]))
    nibbles = _HEX[text.reshape(len(arr), 36)[:, _UUID_HEX_POSITIONS]]
    if (nibbles == 255).any():
        raise StorageError("a snapshot row's event_id is not a canonical UUID string")
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


def _keep_first(ids: np.ndarray, *order: np.ndarray) -> np.ndarray:
    """``_first_occurrences`` in little memory: sort only the ids' first 64 bits (8 bytes a row) to find
    the rows that may repeat an id, and resolve just those exactly. Millions of distinct ids cost a
    few tens of bytes a row instead of a full multi-key sort."""
    n = len(ids)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    high = ids[:, 0]
    ordered = np.argsort(high, kind="stable")
    sorted_high = high[ordered]
    same = sorted_high[1:] == sorted_high[:-1]
    del sorted_high
    if not same.any():
        return keep
    maybe = np.zeros(n, dtype=bool)
    maybe[1:] |= same
    maybe[:-1] |= same
    rows = ordered[maybe]
    del ordered, maybe
    keep[rows] = _first_occurrences(ids[rows], *(key[rows] for key in order))
    return keep


def _first_occurrences(ids: np.ndarray, *order: np.ndarray) -> np.ndarray:
    """Mask over the rows of an (n, 2) id array: True for the one row kept of each id, the first by
    ``order`` (keys, most significant first; row position breaks ties)."""
    n = len(ids)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    minor_first = [np.arange(n), *reversed(order), ids[:, 1], ids[:, 0]]
    sorted_rows = np.lexsort(minor_first)
    ordered = ids[sorted_rows]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    keep[sorted_rows[starts]] = True
    return keep


@dataclass
class _Stats:
    """Counts for the manifest, accumulated over a revision's files."""

    per_partner: Counter[str] = field(default_factory=Counter)
    per_type: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last, rows]
    schema_ids: set[int] = field(default_factory=set)
    mapping_versions: set[str] = field(default_factory=set)
    key_ids: set[str] = field(default_factory=set)

    def merge(self, other: _Stats) -> None:
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
class _Read:
    """One data file as read for sealing: its entry, counts, event ids and Kafka positions."""

    entry: FileEntry
    stats: _Stats
    ids: np.ndarray
    schema_ids: list[int]
    positions: np.ndarray  # partition << 40 | offset: one sortable Kafka position a row


def _read(path: str, data: bytes) -> _Read:
    parquet = pq.ParquetFile(io.BytesIO(data))
    table = parquet.read(columns=_STATS_COLUMNS)
    stats = _Stats()
    schema_ids = _schema_ids(parquet.metadata)
    stats.add(table, schema_ids)
    entry = FileEntry(path=path, sha256=sha256(data), rows=table.num_rows, bytes=len(data))
    positions = (table["kafka_partition"].to_numpy().astype(np.int64) << 40) | table[
        "kafka_offset"
    ].to_numpy().astype(np.int64)
    return _Read(entry, stats, _id_array(table["event_id"]), schema_ids, positions)


class Snapshots:
    """Read side: which periods and revisions exist, and whether a revision is intact."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def periods(self) -> list[str]:
        return sorted(set(self.store.list_dirs("snapshots/")) | set(self.store.list_dirs("staging/")))

    def manifests(self, period: str) -> list[Manifest]:
        found = []
        for name in self.store.list_dirs(f"snapshots/{period}/"):
            if not re.fullmatch(r"r\d+", name):
                continue
            key = manifest_name(period, int(name[1:]))
            if self.store.exists(key):
                found.append(Manifest.model_validate_json(self.store.get(key)))
        return sorted(found, key=lambda m: m.revision)

    def manifest(self, period: str, revision: int | None = None) -> Manifest | None:
        manifests = self.manifests(period)
        if revision is None:
            return manifests[-1] if manifests else None
        return next((m for m in manifests if m.revision == revision), None)

    def tables(self, manifest: Manifest) -> TablesManifest | None:
        key = tables_manifest_name(manifest.period, manifest.revision)
        return TablesManifest.model_validate_json(self.store.get(key)) if self.store.exists(key) else None

    def staged(self, period: str) -> list[str]:
        return [k for k in self.store.list(f"staging/{period}/") if _STAGED.search(k)]

    def verify(self, manifest: Manifest) -> list[str]:
        """Every difference between a revision's objects and its manifest (empty: intact)."""
        problems = []
        raw = self.store.get(manifest_name(manifest.period, manifest.revision))
        if Manifest.model_validate_json(raw) != manifest:
            problems.append(f"{manifest_name(manifest.period, manifest.revision)}: changed since it was read")
        listed = {entry.path for entry in manifest.files}
        tables = self.tables(manifest)
        if tables is not None:
            body = self.store.get(manifest_name(manifest.period, manifest.revision))
            if tables.revision_manifest_sha256 != sha256(body):
                problems.append(
                    f"{tables_manifest_name(manifest.period, manifest.revision)}: built from another manifest"
                )
        for entry in [*manifest.files, *(tables.files.values() if tables else [])]:
            if not self.store.exists(entry.path):
                problems.append(f"{entry.path}: missing")
                continue
            data = self.store.get(entry.path)
            if sha256(data) != entry.sha256:
                problems.append(f"{entry.path}: sha256 {sha256(data)} != manifest {entry.sha256}")
            try:
                rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            except (pa.ArrowException, OSError) as exc:
                problems.append(f"{entry.path}: not readable as Parquet ({exc})")
                continue
            if rows != entry.rows:
                problems.append(f"{entry.path}: {rows} rows != manifest {entry.rows}")
        for key in self.store.list(manifest.prefix + "data/"):
            if key not in listed:
                problems.append(f"{key}: in the revision's data directory but not in its manifest")
        if sum(entry.rows for entry in manifest.files) != manifest.rows:
            problems.append(f"manifest rows {manifest.rows} != sum of its files' rows")
        if sum(manifest.rows_per_partner.values()) != manifest.rows:
            problems.append(f"manifest rows {manifest.rows} != sum of rows per partner")
        return problems


class Sealer:
    """Seals periods whose end plus grace has passed (module docstring: the order and why)."""

    def __init__(
        self,
        store: ObjectStore,
        policy: SealPolicy | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or SealPolicy()
        self.snapshots = Snapshots(store)

    def status_due(self, period: str, latest: Manifest | None, now: datetime) -> Status | None:
        """The status a new revision would get now, or None when the period cannot be sealed yet."""
        _, end = period_bounds(period)
        if now < end + self.policy.grace or (latest is not None and latest.status == "final"):
            return None
        if now >= end + self.policy.final_after:
            return "final"
        return "provisional" if latest is None else "revised"

    def seal_due(self) -> list[Manifest]:
        """Seal every period that is due and has something new (or has just become final)."""
        sealed = []
        for period in self.snapshots.periods():
            manifest = self.seal(period)
            if manifest is not None:
                sealed.append(manifest)
        return sealed

    def seal(self, period: str) -> Manifest | None:
        now = self.policy.clock()
        latest = self.snapshots.manifest(period)
        status = self.status_due(period, latest, now)
        if status is None:
            return None
        revision = 0 if latest is None else latest.revision + 1
        prefix = revision_prefix(period, revision)
        # 1. rows of an interrupted attempt (deduplicated then), staged files, and what is already sealed;
        # with nothing new and no change of status there is nothing to read (the common case)
        resumed_keys = [
            key
            for key in self.store.list(prefix + "data/")
            if (m := _DATA.search(key)) and int(m[1]) == revision
        ]
        staged_keys = self.snapshots.staged(period)
        if not resumed_keys and not staged_keys and not (status == "final" and latest is not None):
            return None
        earlier = [] if latest is None else [_read(e.path, self.store.get(e.path)) for e in latest.files]
        resumed = [_read(key, self.store.get(key)) for key in resumed_keys]
        staged = [_read(key, self.store.get(key)) for key in staged_keys]
        segments = [*earlier, *resumed, *staged]
        # keep each event id once: sealed rows first, then an interrupted attempt's, then the staged copy
        # at the lowest (partition, offset), so any chunking of the staged files keeps the same rows
        rank = np.concatenate(
            [
                np.full(len(r.ids), k, np.int8)
                for k, group in enumerate((earlier, resumed, staged))
                for r in group
            ]
            or [np.empty(0, np.int8)]
        )
        ids = np.concatenate([r.ids for r in segments]) if segments else np.empty((0, 2), np.uint64)
        positions = np.concatenate([r.positions for r in segments] or [np.empty(0, np.int64)])
        counts = [len(r.ids) for r in segments]
        for r in segments:  # the concatenations hold them now
            r.ids = r.positions = np.empty(0)
        first = _keep_first(ids, rank, positions)
        del ids, rank, positions
        pa.default_memory_pool().release_unused()
        stats = _Stats()
        entries: list[FileEntry] = []
        for r in resumed:
            stats.merge(r.stats)
            entries.append(r.entry)
        # 2. staged files into the revision: moved whole, or their first occurrences rewritten
        position = sum(counts[: len(earlier) + len(resumed)])
        sizes = counts[len(earlier) + len(resumed) :]
        dropped = self._take_staged(period, revision, staged, sizes, first[position:], stats, entries)
        rows_new = sum(e.rows for e in entries)
        if rows_new == 0 and not (status == "final" and latest is not None):
            if dropped:
                log.info("period %s: %d staged rows were all duplicates; no new revision", period, dropped)
            return None
        # 3. the previous revision's files, copied (the previous revision itself is never touched)
        for r in earlier:
            target = prefix + "data/" + r.entry.path.rsplit("/", 1)[-1]
            if not self.store.exists(target):
                self.store.copy(r.entry.path, target)
            stats.merge(r.stats)
            entries.append(r.entry.model_copy(update={"path": target}))
        entries.sort(key=lambda e: e.path)
        # 4. the manifest, create-only: from here on the revision exists
        crash_point("seal.before-manifest")
        return self._publish(period, revision, status, now, latest, entries, stats, rows_new, dropped)

    def _take_staged(
        self,
        period: str,
        revision: int,
        staged: list[_Read],
        sizes: list[int],
        first: np.ndarray,
        stats: _Stats,
        entries: list[FileEntry],
    ) -> int:
        """Move or rewrite each staged file into revision ``revision``; returns the duplicates dropped."""
        position = dropped = 0
        for r, size in zip(staged, sizes, strict=True):
            keep = first[position : position + size]
            position += size
            dropped += int(len(keep) - keep.sum())
            key = r.entry.path
            if keep.all():
                partition, offset = (int(g) for g in _STAGED.search(key).groups())  # type: ignore[union-attr]
                target = _data_name(period, revision, revision, partition, offset)
                self.store.rename(key, target)
                crash_point("seal.moved")
                stats.merge(r.stats)
                entries.append(r.entry.model_copy(update={"path": target}))
                continue
            if keep.any():
                table = pq.read_table(io.BytesIO(self.store.get(key))).filter(pa.array(keep))
                partition, offset = table["kafka_partition"][0].as_py(), table["kafka_offset"][0].as_py()
                target = _data_name(period, revision, revision, partition, offset)
                data = write_table(table, r.schema_ids)
                self.store.put(target, data)
                kept = _read(target, data)
                stats.merge(kept.stats)
                entries.append(kept.entry)
            self.store.delete(key)
            crash_point("seal.moved")
        return dropped

    def _publish(
        self,
        period: str,
        revision: int,
        status: Status,
        now: datetime,
        latest: Manifest | None,
        entries: list[FileEntry],
        stats: _Stats,
        rows_new: int,
        dropped: int,
    ) -> Manifest:
        start, end = period_bounds(period)
        manifest = Manifest(
            period=period,
            period_start=start,
            period_end=end,
            revision=revision,
            status=status,
            sealed_at=now,
            grace_days=self.policy.grace / timedelta(days=1),
            final_after_days=self.policy.final_after / timedelta(days=1),
            previous_manifest_sha256=(
                None if latest is None else sha256(self.store.get(manifest_name(period, latest.revision)))
            ),
            files=entries,
            rows=sum(e.rows for e in entries),
            rows_new=rows_new,
            duplicates_dropped=dropped,
            rows_per_partner=dict(sorted(stats.per_partner.items())),
            rows_per_event_type={p: dict(sorted(c.items())) for p, c in sorted(stats.per_type.items())},
            offsets={
                str(p): OffsetRange(first=r[0], last=r[1], rows=r[2])
                for p, r in sorted(stats.offsets.items())
            },
            schema_ids=sorted(stats.schema_ids),
            mapping_versions=sorted(stats.mapping_versions),
            pseudonym_key_ids=sorted(stats.key_ids),
        )
        body = manifest.to_bytes()
        try:
            self.store.put(manifest_name(period, revision), body, create_only=True)
        except ObjectExistsError:
            log.warning("period %s r%d was sealed by another sealer; keeping its manifest", period, revision)
            return self.snapshots.manifest(period, revision) or manifest
        crash_point("seal.after-manifest")
        # 5. the pointer (overwritten; the manifests stay the truth if a crash leaves it behind)
        self._point(period, revision, status, body)
        log.info(
            "sealed %s r%d (%s): %d rows, %d new, %d duplicates dropped",
            period,
            revision,
            status,
            manifest.rows,
            rows_new,
            dropped,
        )
        return manifest

    def _point(self, period: str, revision: int, status: Status, body: bytes) -> None:
        pointer = {
            "period": period,
            "revision": revision,
            "status": status,
            "manifest": manifest_name(period, revision),
            "manifest_sha256": sha256(body),
        }
        self.store.put(latest_name(period), json.dumps(pointer, indent=2).encode())

    def repoint(self) -> None:
        """Make every ``latest.json`` name the newest manifest (after a crash between steps 4 and 5)."""
        for period in self.snapshots.periods():
            latest = self.snapshots.manifest(period)
            if latest is None:
                continue
            key = latest_name(period)
            current = json.loads(self.store.get(key)) if self.store.exists(key) else {}
            if current.get("revision") != latest.revision:
                self._point(
                    period,
                    latest.revision,
                    latest.status,
                    self.store.get(manifest_name(period, latest.revision)),
                )
