"""``ketenstroom sink``: consume ``curated.chain-events``, stage period Parquet files, seal, then commit.

Commit order, enforced in ``Sink.flush`` (ARCHITECTURE.md, "Order of commit"):

1. write every buffered file to object storage under ``staging/`` (durable when ``put`` returns);
2. when the sink has caught up (or is stopping), seal every period that is due: manifest last,
   create-only (``sinks/seal.py`` has the steps); then derive the chain and person tables of each
   sealed revision that has none (``sinks/tables.py``);
3. only then commit the Kafka offsets just past the last record written.

A crash between 1 and 3 re-reads the same records. Staged names are deterministic for the same
chunking (``staging/<period>/part-p<partition>-o<offset>.parquet``, from the file's first row), and
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

import pyarrow as pa
from confluent_kafka import KafkaException, TopicPartition

from ketenstroom.adapters.kafka import ConsumeLoop
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.calendar import HourCalendar, PeriodKind
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode, without_logical_types
from ketenstroom.contract.snapshots import Manifest, TablesManifest, staging_name
from ketenstroom.contract.wire import unframe
from ketenstroom.crashpoints import crash_point
from ketenstroom.errors import DeliveryError, RecordError
from ketenstroom.settings import KafkaSettings, RegistrySettings, SinkSettings
from sinks.parquet import to_table, write_table
from sinks.seal import Sealer
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
        on_sealed: Callable[[list[Manifest]], None] | None = None,
    ) -> None:
        settings = settings or SinkSettings()
        self.settings = settings
        self.topic = (topics or Topics()).curated
        self.loop = ConsumeLoop(
            kafka,
            group_id=settings.group_id,
            topics=[self.topic],
            instance_id=settings.instance_id,
            batch_size=settings.batch_size,
            # librdkafka prefetches up to 64 MiB a partition by default; a quarter keeps it busy
            queued_max_messages_kbytes=16_384,
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
        # rows decoded from the current consume batch, then converted to Arrow (a few hundred bytes a row
        # instead of a dict of Python objects) until they are written
        self._rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._schema_ids: dict[str, set[int]] = defaultdict(set)
        self._next: dict[int, int] = {}  # partition -> offset to commit
        self._staged_since_seal = False
        self._tables_checked = False
        self._last_seal = time.monotonic()
        self._last_flush = time.monotonic()
        self._buffered = 0
        self._plain: dict[int, Any] = {}  # schema id -> writer schema without logical types
        self._calendar = HourCalendar(self.period)  # period and local date per UTC hour
        self.report = SinkReport()

    def run(
        self,
        *,
        stop_at: dict[tuple[str, int], int] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SinkReport:
        def stop() -> bool:
            return should_stop() or (stop_at is not None and self._caught_up(stop_at))

        add = self._add
        try:
            for batch in self.loop.batches(stop=stop):
                for msg in batch:
                    add(msg.partition() or 0, msg.offset() or 0, msg.value())
                self._convert()
                if self._buffered >= self.max_buffered or (
                    self._buffered and time.monotonic() - self._last_flush >= self.flush_interval_s
                ):
                    self.flush()
                elif self.loop.caught_up() and (
                    self._buffered
                    or self._staged_since_seal
                    or time.monotonic() - self._last_seal >= self.SEAL_CHECK_S  # a period may have come due
                ):
                    self.flush(seal=True)
            self.flush(seal=True)
        except KafkaException as exc:
            raise DeliveryError(f"sink on {self.topic} failed: {exc}") from exc
        finally:
            self.loop.close()
            self.registry.close()
        return self.report

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
        self.report.records += 1
        self._next[partition] = offset + 1
        try:
            schema_id, payload = unframe(value)
            plain = self._plain.get(schema_id)
            if plain is None:
                plain = self._plain[schema_id] = without_logical_types(self.registry.writer_schema(schema_id))
            event = decode(plain, payload)  # timestamps as int ms, the event id as its string
        except RecordError as exc:
            # The processor only writes valid ChainEvents; anything else is kept with its reason (curated
            # bytes hold no direct identifiers), counted, and never guessed into a snapshot.
            self.report.undecodable += 1
            self.store.put(
                reject_name(partition, offset),
                json.dumps(
                    {
                        "topic": self.topic,
                        "partition": partition,
                        "offset": offset,
                        "reason": exc.reason,
                        "error": str(exc),
                        "value_base64": base64.b64encode(value or b"").decode(),
                    }
                ).encode(),
            )
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
                self._buffers[period].append(to_table(rows))
        self._rows.clear()

    def _local(self, event_ms: int) -> tuple[str, date]:
        """Period and Amsterdam date of an instant (cached per UTC hour)."""
        return self._calendar(event_ms)

    def flush(self, *, seal: bool = False) -> None:
        self._convert()
        # 1. data files durable
        for period, tables in sorted(self._buffers.items()):
            table = pa.concat_tables(tables)
            if table.num_rows == 0:
                continue
            name = staging_name(period, table["kafka_partition"][0].as_py(), table["kafka_offset"][0].as_py())
            self.store.put(name, write_table(table, self._schema_ids[period]))
            crash_point("sink.staged")
            self.report.objects.append(name)
            self.report.written += table.num_rows
            self.report.rows_per_period[period] = self.report.rows_per_period.get(period, 0) + table.num_rows
            self._staged_since_seal = True
        self._buffers.clear()
        self._schema_ids.clear()
        self._buffered = 0
        self._last_flush = time.monotonic()
        # 2. manifests of the periods that are due, after their data and before the offsets
        if seal and self.sealer is not None:
            sealed = self.sealer.seal_due()
            self.report.sealed.extend(sealed)
            if self.tables:  # derived from sealed revisions: every missing one on the first check (a
                # crash may have left some), then those of the periods just sealed
                periods = None if not self._tables_checked else {m.period for m in sealed}
                if periods is None or periods:
                    self.report.tables.extend(build_missing_tables(self.store, periods))
                self._tables_checked = True
            if sealed and self.on_sealed is not None:
                self.on_sealed(sealed)
            self._staged_since_seal = False
            self._last_seal = time.monotonic()
        # 3. offsets, only after every file above is stored (and sealed, when due)
        crash_point("sink.before-commit")
        if self._next:
            offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self._next.items())]
            self.loop.consumer.commit(offsets=offsets, asynchronous=False)
