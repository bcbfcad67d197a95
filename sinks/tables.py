"""Linked chain and person tables for each sealed revision, derived from it after it is sealed.

A period's chain table needs the history of its cases too (a judgment in July links back to a police
registration in March), so the events handed to ``sinks.microdata`` are this revision's rows plus the
rows of earlier periods' latest sealed revisions. Only the columns the tables use are read.

Memory stays bounded whatever the period's size: the events are hash-partitioned to local temporary
files in ``ceil(rows / bucket_rows)`` buckets, so that every event of a case lands in the case's bucket
(police events follow their report's case, CJIB events their execution's case, a report linked to two
cases goes to both), and each bucket's tables are computed on their own and appended to the output.
The person table is partitioned the same way by the *resolved* person (``ketenstroom.identity``: a
BSN-only record goes to the bucket of the SKN it is linked to). Rows are sorted by pseudonym within a
bucket and buckets come in a fixed order, so the same events always give byte-identical tables.

Persons are linked across SKN and BSN with the evidence of the revisions
``ketenstroom.adapters.links`` names (this revision and every other period's newest revision sealed
no later than it), resolved once per revision; the tables manifest counts links, conflicts and
persons merged by links new since the previous revision.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ketenstroom.adapters.links import LinkCache, link_inputs, with_identifiers
from ketenstroom.adapters.objectstore import ObjectExistsError, ObjectStore
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract.snapshots import (
    FileEntry,
    IdentityCounts,
    Manifest,
    TablesManifest,
    manifest_name,
    revision_prefix,
    sha256,
    tables_manifest_name,
)
from ketenstroom.crashpoints import crash_point
from ketenstroom.identity import EVIDENCE_SCHEMA, Identities, link_evidence, merge_evidence
from sinks.microdata import CHAIN_SCHEMA, PERSON_SCHEMA, chain_table, person_table

log = logging.getLogger("ketenstroom.tables")

COLUMNS = [
    "period",
    "event_id",
    "event_time",
    "chain_step",
    "case_pseudonym",
    "report_pseudonym",
    "execution_pseudonym",
    "person_pseudonym",  # the processor's: the SKN pseudonym, else the BSN's (``person_pseudonym_source``)
    "person_pseudonym_source",
    "age_at_event",
    "concepts",
]
#: Read besides when the tables find their own person links (no link inputs given).
IDENTIFIER_COLUMNS = ["skn_pseudonym", "bsn_pseudonym"]
BUCKET_ROWS = 100_000  # events per bucket: the tables take a few KB an event while they are computed
HISTORY = timedelta(days=3 * 366)  # how far back a case's earlier events are looked up


_POWERS = np.cumprod(np.full(4096, 1_099_511_628_211, dtype=np.uint64))  # wraps mod 2**64, as meant


def hash64(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A stable 64-bit hash per string (polynomial over all its bytes, mixed), and which are not null.

    Used to route rows to buckets and to join links in 8 bytes instead of the pseudonym's 64; a
    collision can only send a row to a bucket where it links to nothing, never lose it."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4).astype(
        np.int64
    )
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    if lengths.max(initial=0) > len(_POWERS):
        raise ValueError(f"pseudonyms longer than {len(_POWERS)} bytes cannot be bucketed")
    total = int(offsets[-1] - offsets[0])
    hashes = np.zeros(n, dtype=np.uint64)
    if total:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=total, offset=int(offsets[0]))
        position = np.arange(total) - np.repeat(starts, lengths)
        with np.errstate(over="ignore"):
            terms = data.astype(np.uint64) * _POWERS[position]
        filled = lengths > 0
        hashes[filled] = np.add.reduceat(terms, starts[filled])
    with np.errstate(over="ignore"):
        mixed = (hashes ^ lengths.astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(29)
    valid = np.asarray(arr.is_valid()) if arr.null_count else np.ones(n, dtype=bool)
    return mixed, valid


def buckets_of(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """A stable bucket number per string; -1 for a null."""
    hashes, valid = hash64(values)
    out = (hashes % np.uint64(buckets)).astype(np.int64)
    out[~valid] = -1
    return out


def _read(store: ObjectStore, paths: Iterable[str], columns: list[str]) -> Iterator[pa.Table]:
    """The columns of each file; rows written before the SKN and BSN pseudonyms get them derived.

    Files here and buckets in ``_build`` are read on one thread: what Arrow's pool threads decode stays
    resident in their allocator heaps, and the tables phase of a large period is where the sink peaks."""
    for path in paths:
        parquet = pq.ParquetFile(io.BytesIO(store.get(path)))
        names = set(parquet.schema_arrow.names)
        table = parquet.read(columns=[c for c in columns if c in names], use_threads=False)
        if "skn_pseudonym" in columns and "skn_pseudonym" not in names:
            table = with_identifiers(table).select(columns)
        yield table


def _history_paths(store: ObjectStore, period: str, lookback: timedelta) -> list[str]:
    """Data files of the latest sealed revision of every earlier period that ended within ``lookback``."""
    start, _ = period_bounds(period)
    snapshots = Snapshots(store)
    paths: list[str] = []
    for other in snapshots.periods():
        _, other_end = period_bounds(other)
        if other == period or other_end > start or other_end <= start - lookback:
            continue
        manifest = snapshots.manifest(other)
        if manifest is not None:
            paths += [e.path for e in manifest.files]
    return paths


def _keys(tables: Iterable[pa.Table], column: str) -> pa.Array:
    chunks = [chunk.cast(pa.string()) for t in tables for chunk in t[column].chunks]
    values = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
    return pc.unique(values.filter(pc.is_valid(values)))


def _history(
    store: ObjectStore, current: list[str], earlier: list[str], columns: list[str] = COLUMNS
) -> list[pa.Table]:
    """Earlier periods' rows of this period's cases: events with one of its case, report or execution
    pseudonyms, and police events of reports that earlier OM events linked to its cases."""
    if not earlier:
        return []
    keys = list(_read(store, current, ["case_pseudonym", "report_pseudonym", "execution_pseudonym"]))
    cases, executions = _keys(keys, "case_pseudonym"), _keys(keys, "execution_pseudonym")
    linked = [
        t.filter(pc.fill_null(pc.is_in(t["case_pseudonym"], value_set=cases), False))
        for t in _read(store, earlier, ["case_pseudonym", "report_pseudonym"])
    ]
    reports = pc.unique(
        pa.concat_arrays([_keys(keys, "report_pseudonym"), _keys(linked, "report_pseudonym")])
    )
    del keys, linked
    found = []
    for table in _read(store, earlier, columns):
        wanted = pc.or_(
            pc.or_(
                pc.is_in(table["case_pseudonym"], value_set=cases),
                pc.is_in(table["report_pseudonym"], value_set=reports),
            ),
            pc.is_in(table["execution_pseudonym"], value_set=executions),
        )
        kept = table.filter(pc.fill_null(wanted, False))
        if kept.num_rows:
            found.append(kept)
    return found


def _links(tables: Iterable[pa.Table], buckets: int) -> dict[str, pa.Table]:
    """(report -> case bucket) and (execution -> case bucket), distinct, over every event with both."""
    found: dict[str, list[pa.Table]] = {"report_pseudonym": [], "execution_pseudonym": []}
    for table in tables:
        bucket = buckets_of(table["case_pseudonym"], buckets)
        for key, parts in found.items():
            hashes, valid = hash64(table[key])
            both = valid & (bucket >= 0)
            pairs = pa.table({"_hash": hashes[both], "_bucket": bucket[both]})
            parts.append(pairs.group_by(["_hash", "_bucket"]).aggregate([]))
    return {
        key: pa.concat_tables(parts).group_by(["_hash", "_bucket"]).aggregate([])
        if parts
        else pa.table({"_hash": pa.array([], pa.uint64()), "_bucket": pa.array([], pa.int64())})
        for key, parts in found.items()
    }


def _case_buckets(table: pa.Table, links: dict[str, pa.Table], buckets: int) -> pa.Table:
    """The rows with a ``_bucket`` column: the case's bucket; a linked row once per case bucket."""
    direct = table.append_column("_bucket", pa.array(buckets_of(table["case_pseudonym"], buckets)))
    with_case = direct.filter(pc.greater_equal(direct["_bucket"], 0))
    parts = [with_case]
    rest = table.filter(pc.is_null(table["case_pseudonym"]))
    for key in ("report_pseudonym", "execution_pseudonym"):
        keyed = rest.filter(pc.is_valid(rest[key]))
        if keyed.num_rows and links[key].num_rows:
            # join on a row number (joins carry no list columns such as ``concepts``), then take rows
            index = pa.table({"_hash": hash64(keyed[key])[0], "_row": pa.array(np.arange(keyed.num_rows))})
            hits = index.join(links[key], "_hash", join_type="inner", use_threads=False).sort_by("_row")
            taken = keyed.take(hits["_row"]).append_column("_bucket", hits["_bucket"])
            parts.append(taken.cast(with_case.schema))
    return pa.concat_tables(parts)


def _person_buckets(table: pa.Table, identities: Identities, buckets: int) -> pa.Table:
    """Rows by the bucket of their resolved person, so a person's SKN and BSN rows meet in one bucket."""
    person = identities.person_column(table)
    placed = table.append_column("_bucket", pa.array(buckets_of(person, buckets)))
    return placed.filter(pc.greater_equal(placed["_bucket"], 0))


def _spill(
    tables: Iterable[pa.Table], layouts: dict[str, tuple[Path, Callable[[pa.Table], pa.Table]]]
) -> dict[str, list[Path]]:
    """One pass over the events: each table's rows into their buckets' temporary Parquet files, for every
    layout (name -> directory, rows with a ``_bucket`` column). Returns each layout's bucket files."""
    writers: dict[tuple[str, int], pq.ParquetWriter] = {}
    try:
        for table in tables:
            for name, (directory, assign) in layouts.items():
                placed = assign(table)
                for bucket in pc.unique(placed["_bucket"]).to_pylist():
                    part = placed.filter(pc.equal(placed["_bucket"], bucket)).drop_columns(["_bucket"])
                    writer = writers.get((name, bucket))
                    if writer is None:
                        path = directory / f"bucket-{bucket:05d}.parquet"
                        writer = writers[(name, bucket)] = pq.ParquetWriter(path, part.schema)
                    writer.write_table(part.cast(writer.schema))
    finally:
        for writer in writers.values():
            writer.close()
    return {
        name: [directory / f"bucket-{b:05d}.parquet" for n, b in sorted(writers) if n == name]
        for name, (directory, _) in layouts.items()
    }


def _build(
    parts: list[Path], period: str, build: Callable[[pa.Table, str], pa.Table], schema: pa.Schema
) -> bytes:
    """Each bucket's table, appended in bucket order."""
    out = io.BytesIO()
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for path in parts:
            table = build(pq.read_table(path, use_threads=False), period)
            if table.num_rows:
                writer.write_table(table.cast(schema))
            del table
            pa.default_memory_pool().release_unused()  # give a bucket's working memory back
    return out.getvalue()


def _parquet(table: pa.Table, schema: pa.Schema) -> bytes:
    out = io.BytesIO()
    pq.write_table(table.cast(schema), out, compression="zstd")
    return out.getvalue()


class Microdata(NamedTuple):
    tables: dict[str, bytes]  # name (chain, person) -> Parquet
    events_read: int
    relinked: pa.Array  # persons some of whose events the previous links gave to another person


def microdata_tables(
    store: ObjectStore,
    period: str,
    files: list[FileEntry],
    *,
    bucket_rows: int = BUCKET_ROWS,
    lookback: timedelta = HISTORY,
    identities: Identities | None = None,
    before: Identities | None = None,
) -> Microdata:
    """``chain`` and ``person`` Parquet for a revision (``files``: its data files), and the events used.

    ``identities`` links persons across SKN and BSN (``ketenstroom.adapters.links`` says from which
    revisions); by default from the link evidence of the events read here. ``relinked`` names the
    persons with an event up to the period's end that ``before`` (the previous revision's links; by
    default none: the processor's SKN-else-BSN pseudonym) resolved to another person."""
    current = [e.path for e in files]
    # with link inputs given, the processor's pseudonym and its source say all the tables need (it is
    # the SKN's when there is one, else the BSN's): the 64-character SKN and BSN columns stay unread
    columns = COLUMNS if identities is not None else COLUMNS + IDENTIFIER_COLUMNS
    history = _history(store, current, _history_paths(store, period, lookback), columns)
    rows = sum(e.rows for e in files) + sum(t.num_rows for t in history)
    _start, end = period_bounds(period)
    moved: list[pa.Array] = []

    def raw() -> Iterator[pa.Table]:
        yield from _read(store, current, columns)
        yield from history

    if identities is None:
        identities = Identities.resolve(merge_evidence(link_evidence(t) for t in raw()))
    resolved = identities
    old = before or Identities.resolve(EVIDENCE_SCHEMA.empty_table())

    def events() -> Iterator[pa.Table]:
        """The events with their persons resolved (and the SKN and BSN columns dropped: smaller buckets)."""
        for table in raw():
            yield resolved.resolved(table)

    def observed() -> Iterator[pa.Table]:
        """``events()``, noting on the way whose events the new links moved to another person."""
        for table in raw():
            early = table.filter(pc.less(table["event_time"], pa.scalar(end, pa.timestamp("ms", tz="UTC"))))
            now, then = resolved.person_column(early), old.person_column(early)
            moved.append(pc.unique(now.filter(pc.fill_null(pc.not_equal(now, then), False))))
            yield resolved.resolved(table)

    def chain(table: pa.Table, period: str) -> pa.Table:
        return chain_table(table, period, identities=resolved)

    def person(table: pa.Table, period: str) -> pa.Table:
        return person_table(table, period, identities=resolved)

    def relinked() -> pa.Array:
        return pc.unique(pa.chunked_array(moved, pa.string()).combine_chunks())

    if rows <= bucket_rows:  # small enough to compute at once
        parts = list(observed())
        whole = pa.concat_tables([t.cast(parts[0].schema) for t in parts])
        tables = {
            "chain": _parquet(chain(whole, period), CHAIN_SCHEMA),
            "person": _parquet(person(whole, period), PERSON_SCHEMA),
        }
        return Microdata(tables, rows, relinked())
    buckets = math.ceil(rows / bucket_rows)
    links = _links(observed(), buckets)
    with tempfile.TemporaryDirectory(prefix="ketenstroom-tables-") as tmp:
        case_dir, person_dir = Path(tmp) / "case", Path(tmp) / "person"
        case_dir.mkdir()
        person_dir.mkdir()
        spilled = _spill(
            events(),
            {
                "case": (case_dir, lambda t: _case_buckets(t, links, buckets)),
                "person": (person_dir, lambda t: _person_buckets(t, resolved, buckets)),
            },
        )
        tables = {
            "chain": _build(spilled["case"], period, chain, CHAIN_SCHEMA),
            "person": _build(spilled["person"], period, person, PERSON_SCHEMA),
        }
    return Microdata(tables, rows, relinked())


def build_tables(
    store: ObjectStore,
    manifest: Manifest,
    *,
    now: datetime | None = None,
    links: LinkCache | None = None,
) -> TablesManifest:
    """Write a sealed revision's chain and person tables, then their manifest (create-only, last).

    ``links`` keeps the person links read and resolved (``ketenstroom.adapters.links``) for the next
    revisions."""
    existing = Snapshots(store).tables(manifest)
    if existing is not None:
        return existing
    inputs = link_inputs(store, manifest, links)
    identities, before = inputs.identities, inputs.before
    pa.default_memory_pool().release_unused()  # reading the evidence is done: give its buffers back
    tables, events_read, relinked = microdata_tables(
        store, manifest.period, manifest.files, identities=identities, before=before
    )
    persons = pq.read_table(io.BytesIO(tables["person"]), columns=["person_pseudonym", "identity_conflict"])
    prefix = revision_prefix(manifest.period, manifest.revision) + "tables/"
    files = {}
    for name, data in sorted(tables.items()):
        key = f"{prefix}{name}.parquet"
        store.put(key, data)
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        files[name] = FileEntry(path=key, sha256=sha256(data), rows=rows, bytes=len(data))
    built = TablesManifest(
        period=manifest.period,
        revision=manifest.revision,
        revision_manifest_sha256=sha256(store.get(manifest_name(manifest.period, manifest.revision))),
        built_at=now or datetime.now(UTC),
        events_read=events_read,
        files=files,
        identity=IdentityCounts(
            links=identities.links,
            conflicts=identities.conflicts,
            persons=persons.num_rows,
            persons_in_conflict=pc.sum(persons["identity_conflict"]).as_py() or 0,
            persons_merged_by_new_links=pc.sum(
                pc.is_in(persons["person_pseudonym"], value_set=relinked)
            ).as_py()
            or 0,
            link_inputs=inputs.revisions,
        ),
    )
    crash_point("tables.before-manifest")
    try:
        store.put(
            tables_manifest_name(manifest.period, manifest.revision), built.to_bytes(), create_only=True
        )
    except ObjectExistsError:
        return Snapshots(store).tables(manifest) or built
    log.info(
        "tables of %s r%d: %s", manifest.period, manifest.revision, {k: v.rows for k, v in files.items()}
    )
    return built


def build_missing_tables(store: ObjectStore, periods: Iterable[str] | None = None) -> list[TablesManifest]:
    """Tables for every sealed revision that has none yet (after a crash, or a sink run with --no-tables)."""
    snapshots = Snapshots(store)
    todo = [
        manifest
        for period in (sorted(periods) if periods is not None else snapshots.periods())
        for manifest in snapshots.manifests(period)
        if snapshots.tables(manifest) is None
    ]
    # person links read and resolved once for all the revisions built here; for one revision, nothing
    # to share: its evidence is let go as soon as it is resolved (a large period's tables need the room)
    links = LinkCache() if len(todo) > 1 else None
    return [build_tables(store, manifest, links=links) for manifest in todo]
