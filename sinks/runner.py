"""``ketenstroom sink``: consume ``curated.chain-events``, write period Parquet files, then commit.

Commit order, enforced in ``Sink.flush`` (ARCHITECTURE.md, "Order of commit"):

1. write every buffered file to object storage (durable when ``put`` returns);
2. only then commit the Kafka offsets just past the last record written.

A crash between 1 and 2 re-reads the same records; object names are deterministic
(``snapshots/<period>/part-p<partition>-o<first offset>.parquet``), so the retry overwrites the same
objects instead of adding duplicates. Sealing with manifests and revisions builds on this (issue 5).
"""

from __future__ import annotations

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.wire import unframe
from ketenstroom.errors import DeliveryError, RecordError
from ketenstroom.settings import KafkaSettings, RegistrySettings
from sinks.parquet import to_parquet
from sinks.periods import PeriodKind, period_code

log = logging.getLogger("ketenstroom.sink")


def reject_name(partition: int, offset: int) -> str:
    """Where a record the sink cannot decode is kept (deterministic, so a retry overwrites)."""
    return f"rejects/part-p{partition:03d}-o{offset:020d}.json"


def object_name(period: str, partition: int, first_offset: int) -> str:
    """Deterministic: the same records always land under the same name."""
    return f"snapshots/{period}/part-p{partition:03d}-o{first_offset:020d}.parquet"


@dataclass
class SinkReport:
    records: int = 0
    written: int = 0
    duplicates: int = 0
    undecodable: int = 0
    objects: list[str] = field(default_factory=list)
    rows_per_period: dict[str, int] = field(default_factory=dict)


class Sink:
    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        registry: RegistrySettings,
        store: ObjectStore,
        group_id: str = "ketenstroom-sink",
        period: PeriodKind = "month",
        topics: Topics | None = None,
        max_buffered: int = 50_000,
    ) -> None:
        self.consumer = Consumer(
            kafka.librdkafka(
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                enable_partition_eof=True,
            )
        )
        self.registry = Registry(registry)
        self.store = store
        self.period = period
        self.topic = (topics or Topics()).curated
        self.max_buffered = max_buffered
        # (period, partition) -> rows; first offset of each buffer names its object
        self._buffers: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)  # event ids per period, per run
        self._next: dict[int, int] = {}  # partition -> offset to commit
        self._position: dict[int, int] = {}  # partition -> end offset reached (partition EOF), for stop_at
        self._buffered = 0
        self.report = SinkReport()

    def run(
        self,
        *,
        stop_at: dict[tuple[str, int], int] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SinkReport:
        self.consumer.subscribe([self.topic])
        try:
            while not should_stop():
                if stop_at is not None and self._caught_up(stop_at):
                    break
                messages = self.consumer.consume(num_messages=5000, timeout=0.5)
                for msg in messages:
                    err = msg.error()
                    if err is not None and err.code() == KafkaError._PARTITION_EOF:
                        # at the end (past any transaction markers and aborted records)
                        self._position[msg.partition()] = max(
                            self._position.get(msg.partition(), 0), msg.offset()
                        )
                        continue
                    if err is not None:
                        raise DeliveryError(f"consuming {self.topic} failed: {err}")
                    self._add(msg.partition(), msg.offset(), msg.value())
                if self._buffered >= self.max_buffered:
                    self.flush()
            self.flush()
        except KafkaException as exc:
            raise DeliveryError(f"sink on {self.topic} failed: {exc}") from exc
        finally:
            self.consumer.close()
            self.registry.close()
        return self.report

    def _caught_up(self, stop_at: dict[tuple[str, int], int]) -> bool:
        return all(
            self._position.get(p, 0) >= end for (t, p), end in stop_at.items() if t == self.topic and end > 0
        )

    def _add(self, partition: int, offset: int, value: bytes | None) -> None:
        self.report.records += 1
        self._next[partition] = offset + 1
        try:
            schema_id, payload = unframe(value)
            event = decode(self.registry.writer_schema(schema_id), payload)
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
        event["event_id"] = str(event["event_id"])  # fastavro gives uuid.UUID for logicalType uuid
        period = period_code(event["event_time"], self.period)
        if event["event_id"] in self._seen[period]:
            self.report.duplicates += 1
            return
        self._seen[period].add(event["event_id"])
        event.update(period=period, kafka_partition=partition, kafka_offset=offset)
        self._buffers[(period, partition)].append(event)
        self._buffered += 1

    def flush(self) -> None:
        # 1. data files durable
        for (period, partition), rows in sorted(self._buffers.items()):
            if not rows:
                continue
            name = object_name(period, partition, rows[0]["kafka_offset"])
            self.store.put(name, to_parquet(rows))
            self.report.objects.append(name)
            self.report.written += len(rows)
            self.report.rows_per_period[period] = self.report.rows_per_period.get(period, 0) + len(rows)
        self._buffers.clear()
        self._buffered = 0
        # 2. offsets, only after every file above is stored
        if self._next:
            offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self._next.items())]
            self.consumer.commit(offsets=offsets, asynchronous=False)
