"""``ketenstroom sink``: consume ``curated.chain-events``, stage period Parquet files, seal, then commit.

Commit order, enforced in ``Sink.flush`` (ARCHITECTURE.md, "Order of commit"):

1. write every buffered file to object storage under ``staging/`` (durable when ``put`` returns);
2. when the sink has caught up (or is stopping), seal every period that is due: manifest last,
   create-only (``sinks/seal.py`` has the steps); then derive the chain and person tables of each
   sealed revision that has none (``sinks/tables.py``);
3. only then commit the Kafka offsets just past the last record written.

A transient failure (object store or registry down: ``ketenstroom.errors.is_transient``) is waited out
where it happens (``ketenstroom.adapters.retry.Backoff``, logged): a failed flush is tried again as a
whole, which is safe because every step above is idempotent (a staged period leaves the buffer only once
its file is stored; sealing resumes; a manifest already written is kept). A stop request ends the wait;
the offsets are then not committed and the records are read again next time.
A crash between 1 and 3 re-reads the same records. Staged names are deterministic for the same
chunking (``staging/<period>/part-p<partition>-o<offset>-<digest>.parquet``: the file's first row and a
digest of all its rows' positions, so files of other rows behind the same first row, as two instances
stage around a partition handover, never overwrite each other), and
whatever the chunking of a retry, sealing keeps each event id once (the copy at the lowest partition
and offset), so a re-read never shows up twice, in the open revision or in a later one.
Memory is bounded by ``max_buffered`` rows; the sink keeps no per-event state.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaException, Message, TopicPartition

from ketenstroom.adapters.kafka import ConsumeLoop, commit_offsets
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.retry import Backoff
from ketenstroom.calendar import HourCalendar, PeriodKind
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode, without_logical_types
from ketenstroom.contract.snapshots import Manifest, TablesManifest, rows_digest, staging_name
from ketenstroom.contract.wire import unframe
from ketenstroom.crashpoints import crash_point
from ketenstroom.errors import DeliveryError, RecordError
from ketenstroom.settings import KafkaSettings, RegistrySettings, SinkSettings
from sinks.columnar import Batch, FastPathRefused, Plan
from sinks.hours import HourTable
from sinks.metrics import SinkMetrics
from sinks.parquet import EVENT_COLUMNS, PLAIN, SCHEMA
from sinks.seal import Sealer
from sinks.stats import write_with_stats
from sinks.tables import build_missing_tables

log = logging.getLogger("ketenstroom.sink")


def reject_name(partition: int, offset: int) -> str:
    """Where a record the sink cannot decode is kept (deterministic, so a retry overwrites)."""
    return f"rejects/part-p{partition:03d}-o{offset:020d}.json"


@dataclass
class SinkReport:
    records: int = 0
    written: int = 0  # rows staged
    undecodable: int = 0
    objects: list[str] = field(default_factory=list)  # staged objects written
    rows_per_period: dict[str, int] = field(default_factory=dict)
    sealed: list[Manifest] = field(default_factory=list)
    tables: list[TablesManifest] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Rows dropped as repeated event ids by the revisions this run sealed."""
        return sum(m.duplicates_dropped for m in self.sealed)


class Sink:
    SEAL_CHECK_S = 60.0  # how often an idle, caught-up sink looks for periods that have come due
    MAX_POLL_INTERVAL_MS = 30 * 60 * 1000  # the longest a seal (with its tables) may take between polls

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        registry: RegistrySettings,
        store: ObjectStore,
        settings: SinkSettings | None = None,
        period: PeriodKind = "month",
        topics: Topics | None = None,
        sealer: Sealer | None = None,
        tables: bool = True,
        metrics: SinkMetrics | None = None,
        on_sealed: Callable[[list[Manifest]], None] | None = None,
    ) -> None:
        settings = settings or SinkSettings()
        self.metrics = metrics or SinkMetrics()
        self.healthy = False  # True while consuming, for /health
        self.settings = settings
        self.topic = (topics or Topics()).curated
        self.loop = ConsumeLoop(
            kafka,
            group_id=settings.group_id,
            topics=[self.topic],
            instance_id=settings.instance_id,
            batch_size=settings.batch_size,
            # a batch ends at a partition's end instead of waiting out the poll timeout there (up to
            # 0.5 s of idling before every seal at the end of a catch-up; ``ConsumeLoop``)
            return_at_eof=True,
            # librdkafka prefetches up to 64 MiB a partition by default; a quarter keeps it busy
            queued_max_messages_kbytes=16_384,
            # ... provided the next fetch follows as soon as the queue has room: librdkafka waits
            # ``fetch.queue.backoff.ms`` (1 s by default) after the queue was full, and a sink that
            # decodes column-wise empties 16 MiB well within that (measured: 29k -> 45-52k events/s on
            # the sink bench's stream, the prefetch bound and so the memory unchanged)
            fetch_queue_backoff_ms=10,
            # sealing a large period and deriving its tables runs between two polls and takes minutes
            # on a busy machine (5 million events: several); librdkafka's default of 5 minutes would
            # drop the sink from its group then, and the commit after the seal would fail. A sink that
            # dies is still noticed after the session timeout (heartbeats run on their own thread).
            max_poll_interval_ms=self.MAX_POLL_INTERVAL_MS,
            on_revoke=self._handover,
        )
        self.registry = Registry(registry)
        self.store = store
        self.period = period
        self.max_buffered = settings.max_buffered
        self.flush_interval_s = settings.flush_interval_s
        self.sealer = sealer
        self.tables = tables
        #: called after each seal that produced revisions (and their tables), before offsets are committed;
        #: the CLI wires the release build here (the sink never imports ``releases``)
        self.on_sealed = on_sealed
        # period -> rows (of any partition); the first row's partition and offset name its staged object
        # rows decoded from the current consume batch (reference path), then converted to Arrow (a few
        # hundred bytes a row instead of a dict of Python objects) until they are written; buffered
        # tables have plain strings (``PLAIN``), dictionary-encoded once per staged file
        self._rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._schema_ids: dict[str, set[int]] = defaultdict(set)
        self._next: dict[int, int] = {}  # partition -> offset to commit
        self._staged_since_seal = False
        self._tables_checked = False
        self._last_seal = time.monotonic()
        self._last_flush = time.monotonic()
        self._buffered = 0
        self._newest_ms = 0  # Kafka timestamp of the newest record consumed
        self._lag_at = 0.0
        self._plain: dict[int, Any] = {}  # schema id -> writer schema without logical types
        self._plans: dict[int, Plan | None] = {}  # schema id -> column-wise reader (None: no plan)
        #: decode consume batches column-wise (``sinks.columnar``); False: record by record with fastavro,
        #: the reference path (every record that the column-wise reader cannot read exactly takes it anyway)
        self.columnar = True
        self._calendar = HourCalendar(self.period)  # period and local date per UTC hour
        self._hours = HourTable(self._calendar)  # the same for a column of event times
        self._codes = pa.array([], pa.string())  # the period codes of ``_hours``, as an Arrow array
        self.report = SinkReport()
        self.backoff = Backoff(
            max_s=settings.retry_backoff_max_s, log=log, on_retry=lambda _exc: self.metrics.retries.inc()
        )
        self._should_stop: Callable[[], bool] = lambda: False
        self._unannounced: list[Manifest] = []  # sealed, not yet handed to on_sealed

    def run(
        self,
        *,
        stop_at: dict[tuple[str, int], int] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SinkReport:
        def stop() -> bool:
            return should_stop() or (stop_at is not None and self._caught_up(stop_at))

        self._should_stop = should_stop
        add = self._add
        try:
            for batch in self.loop.batches(stop=stop):
                self.healthy = True
                if self.columnar:
                    self._add_batch(batch)
                else:
                    for msg in batch:
                        add(msg.partition() or 0, msg.offset() or 0, msg.value())
                self._observe(batch)
                self._convert()
                if self._buffered >= self.max_buffered or (
                    self._buffered and time.monotonic() - self._last_flush >= self.flush_interval_s
                ):
                    self._retrying_flush(seal=False)
                elif self.loop.caught_up() and (
                    self._buffered
                    or self._staged_since_seal
                    or time.monotonic() - self._last_seal >= self.SEAL_CHECK_S  # a period may have come due
                ):
                    self._retrying_flush(seal=True)
            self._retrying_flush(seal=True)
        except KafkaException as exc:
            raise DeliveryError(f"sink on {self.topic} failed: {exc}") from exc
        finally:
            self.healthy = False
            self.loop.close()
            self.registry.close()
        return self.report

    def _retrying_flush(self, *, seal: bool) -> None:
        self.backoff.call(
            "flush" + (" and seal" if seal else ""), lambda: self.flush(seal=seal), self._should_stop
        )

    LAG_EVERY_S = 1.0

    def _observe(self, batch: list[Message]) -> None:
        """Metrics once per batch (never per record): records consumed, and, at most every
        ``LAG_EVERY_S``, the lag in records (from the high watermark of the last fetch) and in seconds."""
        m = self.metrics
        if batch:
            m.records.inc(len(batch))
            _kind, ts = batch[-1].timestamp()
            if ts > 0:
                self._newest_ms = max(self._newest_ms, ts)
        now = time.monotonic()
        if now - self._lag_at < self.LAG_EVERY_S:
            return
        self._lag_at = now
        behind = False
        for tp in self.loop.assignment():
            _low, high = self.loop.consumer.get_watermark_offsets(tp, cached=True)
            position = self._next.get(tp.partition)
            if high < 0 or position is None:
                continue  # nothing fetched or consumed from this partition yet
            lag = max(0, high - position)
            behind |= lag > 0
            m.lag.labels(str(tp.partition)).set(lag)
        m.lag_seconds.set(
            max(0.0, time.time() - self._newest_ms / 1000) if behind and self._newest_ms else 0.0
        )

    def _caught_up(self, stop_at: dict[tuple[str, int], int]) -> bool:
        """Every partition assigned to this instance has reached its stop offset (other instances of the
        group see to theirs)."""
        if not any(end > 0 for (t, _p), end in stop_at.items() if t == self.topic):
            return True  # nothing to read (or no such topic): do not wait for an assignment
        assigned = {tp.partition for tp in self.loop.assignment()}
        reached = self.loop.eof_offset
        return bool(assigned) and all(
            reached.get((t, p), 0) >= end
            for (t, p), end in stop_at.items()
            if t == self.topic and end > 0 and p in assigned
        )

    def _add(self, partition: int, offset: int, value: bytes | None) -> None:
        """The reference path: one record, decoded by fastavro (or kept as a reject with its reason)."""
        self.report.records += 1
        self._next[partition] = offset + 1
        self._decode_one(partition, offset, value)

    def _add_batch(self, batch: list[Message]) -> None:
        """A consume batch, decoded column-wise per writer schema (``sinks.columnar``) straight into
        Arrow; the records it cannot read exactly (and any batch it refuses) go the reference path."""
        n = len(batch)
        if n == 0:
            return
        self.report.records += n
        values = [m.value() or b"" for m in batch]
        partitions = np.fromiter((m.partition() or 0 for m in batch), np.int32, n)
        offsets = np.fromiter((m.offset() or 0 for m in batch), np.int64, n)
        for p in np.unique(partitions).tolist():  # offsets rise within a partition
            self._next[p] = int(offsets[partitions == p].max()) + 1
        whole = Batch.of(values)
        starts, ends = whole.pos, whole.ends
        head = whole.buf[np.minimum(starts[:, None] + np.arange(5), whole.last)].astype(np.uint32)
        framed = (ends - starts >= 5) & (head[:, 0] == 0)
        schema_ids = (head[:, 1] << 24) | (head[:, 2] << 16) | (head[:, 3] << 8) | head[:, 4]
        slow: list[np.ndarray] = [np.nonzero(~framed)[0]]
        for schema_id in np.unique(schema_ids[framed]).tolist():
            rows = np.nonzero(framed & (schema_ids == schema_id))[0]
            plan = self._plan(schema_id)
            if plan is None:
                slow.append(rows)
                continue
            try:
                table, bad = plan.table(Batch(whole.buf, starts[rows] + 5, ends[rows]), EVENT_COLUMNS)
                good = np.delete(rows, bad) if len(bad) else rows
                self._stage_columns(schema_id, table, partitions[good], offsets[good])
            except FastPathRefused as exc:
                log.info("decoding %d records of schema %d one by one: %s", len(rows), schema_id, exc)
                slow.append(rows)
                continue
            slow.append(rows[bad])
        for i in np.sort(np.concatenate(slow)).tolist():
            self._decode_one(int(partitions[i]), int(offsets[i]), batch[i].value())

    def _plan(self, schema_id: int) -> Plan | None:
        if schema_id not in self._plans:
            try:
                writer = self.registry.writer_schema(schema_id)
            except RecordError:
                return None  # unknown id: the reference path keeps each record as a reject
            self._plans[schema_id] = Plan.compile(writer)
        return self._plans[schema_id]

    def _stage_columns(
        self, schema_id: int, table: pa.Table, partitions: np.ndarray, offsets: np.ndarray
    ) -> None:
        """Decoded ChainEvent columns plus period, local date and Kafka position, buffered per period."""
        if table.num_rows == 0:
            return
        event_time = table["event_time"]
        if event_time.null_count:
            raise FastPathRefused("a record has no event_time")
        ms = event_time.cast(pa.int64()).to_numpy()
        period_idx, day = self._hours.lookup(ms)
        columns = {
            # one C++ gather of the period codes (a Python string a row cost as much as decoding them)
            "period": self._period_codes().take(pa.array(period_idx)),
            **{name: table[name] for name in table.column_names},
            "event_date": pa.array(day, pa.int32()).cast(pa.date32()),
            "kafka_partition": pa.array(partitions, pa.int32()),
            "kafka_offset": pa.array(offsets, pa.int64()),
        }
        full = pa.Table.from_pydict({f.name: columns[f.name] for f in PLAIN}, schema=PLAIN)
        present = np.unique(period_idx)
        if len(present) > 1:
            # rows grouped by period in one stable gather, then sliced (zero-copy), instead of one filter
            # over the whole batch per period; each period keeps its rows in consume order
            order = np.argsort(period_idx, kind="stable")
            full = full.take(pa.array(order))
            bounds = [*np.searchsorted(period_idx[order], present, side="left").tolist(), len(order)]
        else:
            bounds = [0, len(period_idx)]
        for k, index in enumerate(present.tolist()):
            # plain strings until the flush dictionary-encodes the period's whole file at once
            part = full.slice(bounds[k], bounds[k + 1] - bounds[k])
            period = self._hours.periods[index]
            self._buffers[period].append(part)
            self._schema_ids[period].add(schema_id)
            self._buffered += part.num_rows

    def _period_codes(self) -> pa.Array:
        if len(self._codes) != len(self._hours.periods):
            self._codes = pa.array(self._hours.periods, pa.string())
        return self._codes

    def _decode_one(self, partition: int, offset: int, value: bytes | None) -> None:
        try:
            schema_id, payload = unframe(value)
            plain = self._plain.get(schema_id)
            if plain is None:
                writer = self.backoff.call(
                    f"fetching schema id {schema_id}",
                    lambda: self.registry.writer_schema(schema_id),
                    self._should_stop,
                )
                plain = self._plain[schema_id] = without_logical_types(writer)
            event = decode(plain, payload)  # timestamps as int ms, the event id as its string
        except RecordError as exc:
            # The processor only writes valid ChainEvents; anything else is kept with its reason (curated
            # bytes hold no direct identifiers), counted, and never guessed into a snapshot.
            self.report.undecodable += 1
            self.metrics.undecodable.inc()
            kept = json.dumps(
                {
                    "topic": self.topic,
                    "partition": partition,
                    "offset": offset,
                    "reason": exc.reason,
                    "error": str(exc),
                    "value_base64": base64.b64encode(value or b"").decode(),
                }
            ).encode()
            name = reject_name(partition, offset)
            self.backoff.call(f"keeping {name}", lambda: self.store.put(name, kept), self._should_stop)
            log.error(
                "kept undecodable record %s/%d@%d under rejects/: %s",
                self.topic,
                partition,
                offset,
                exc.reason,
            )
            return
        period, day = self._local(event["event_time"])
        event.update(period=period, event_date=day, kafka_partition=partition, kafka_offset=offset)
        self._rows[period].append(event)
        self._schema_ids[period].add(schema_id)
        self._buffered += 1

    def _convert(self) -> None:
        for period, rows in self._rows.items():
            if rows:
                self._buffers[period].append(pa.Table.from_pylist(rows, schema=PLAIN))
        self._rows.clear()

    def _local(self, event_ms: int) -> tuple[str, date]:
        """Period and Amsterdam date of an instant (cached per UTC hour)."""
        return self._calendar(event_ms)

    def _handover(self, partitions: list[TopicPartition]) -> None:
        """Partitions are being taken away (a rebalance, or the consumer closing): stage what is buffered
        and commit its offsets while this instance still owns them, then forget those partitions'
        positions, so the next owner starts where this one stopped and this one never commits for a
        partition it no longer holds. Staging is safe to repeat (sealing keeps each event id once); a
        failure here is logged and left to the next owner, which re-reads from the last commit."""
        revoked = {tp.partition for tp in partitions if tp.topic == self.topic}
        if not revoked:
            return
        try:
            self.flush()
        except Exception as exc:  # inside librdkafka's callback: log it; the next owner re-reads
            log.warning(
                "handover of partitions %s: staging/commit failed, the next owner re-reads: %s",
                sorted(revoked),
                exc,
            )
        for p in revoked:
            self._next.pop(p, None)

    def flush(self, *, seal: bool = False) -> None:
        self._convert()
        started = time.monotonic()
        # 1. data files durable; a period leaves the buffer once its file is stored (a retry after a
        # failure here writes only the rest, and counts nothing twice)
        for period, tables in sorted(self._buffers.items()):
            # one dictionary encoding per staged file (per batch and period it cost more than decoding)
            table = pa.concat_tables(tables).cast(SCHEMA)
            if table.num_rows == 0:
                continue
            parts, offs = table["kafka_partition"].combine_chunks(), table["kafka_offset"].combine_chunks()
            digest = rows_digest(parts.to_numpy().tobytes(), offs.to_numpy().tobytes())
            name = staging_name(period, parts[0].as_py(), offs[0].as_py(), digest)
            self.store.put(name, write_with_stats(table, self._schema_ids[period]))
            del self._buffers[period]
            crash_point("sink.staged")
            self.report.objects.append(name)
            self.report.written += table.num_rows
            self.report.rows_per_period[period] = self.report.rows_per_period.get(period, 0) + table.num_rows
            self._staged_since_seal = True
            self.metrics.staged_rows.labels(self.period).inc(table.num_rows)
        self._buffers.clear()
        self._schema_ids.clear()
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.metrics.flush_duration.observe(self._last_flush - started)
        # 2. manifests of the periods that are due, after their data and before the offsets
        if seal and self.sealer is not None:
            sealed = self.sealer.seal_due()
            self.report.sealed.extend(sealed)
            self._unannounced.extend(sealed)
            if self.tables:  # derived from sealed revisions: every missing one on the first check (a
                # crash may have left some), then those of the periods just sealed
                periods = None if not self._tables_checked else {m.period for m in self._unannounced}
                if periods is None or periods:
                    self.report.tables.extend(build_missing_tables(self.store, periods))
                self._tables_checked = True
            if self._unannounced and self.on_sealed is not None:
                self.on_sealed(self._unannounced)  # also those of an attempt that failed after sealing
            self._unannounced = []
            self._staged_since_seal = False
            self._last_seal = time.monotonic()
            self.metrics.seal_duration.observe(self._last_seal - self._last_flush)
            for m in sealed:
                self.metrics.sealed.labels(self.period, m.status).inc()
                self.metrics.last_seal.labels(self.period, m.status).set(time.time())
                self.metrics.snapshot_rows.labels(self.period).set(m.rows)
        # 3. offsets, only after every file above is stored (and sealed, when due)
        crash_point("sink.before-commit")
        if self._next:
            offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self._next.items())]
            if not commit_offsets(self.loop.consumer, offsets, what=f"sink on {self.topic}"):
                self.metrics.commits_refused.inc()
