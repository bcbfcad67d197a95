"""Exactly-once runner: consume raw topics, transform in batches, produce in Kafka transactions.

One transaction per batch holds, atomically:

1. every outcome record (``curated.chain-events`` or ``dlq.<partner>``),
2. every new event id in the dedup changelog (one compacted topic per raw topic, same partition), and
3. the consumer offsets just past the batch (``send_offsets_to_transaction``).

So after a crash at any moment either all three happened or none did; a restarted worker rebuilds
its dedup set for the partitions it is given from the changelog (read_committed) and carries on.
A ``read_committed`` reader of the outputs sees every input exactly once. The transactional id is
``<app id>-<instance id>``: restarting an instance fences its predecessor and aborts what it left open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ketenstroom.adapters.kafka import ensure_topics, read_to_end
from ketenstroom.contract import Topics
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import KafkaSettings
from processors.metrics import ProcessorMetrics
from processors.transform import Curated, DeadLetter, RawRecord, Transformer

log = logging.getLogger("ketenstroom.processor")


@dataclass
class Reconciliation:
    """Per partner: records in = curated + dead-lettered + duplicates."""

    records_in: dict[str, int]
    curated: dict[str, int]
    dead: dict[str, dict[str, int]]
    duplicates: dict[str, int]

    def reconciles(self) -> bool:
        return all(
            self.records_in.get(p, 0)
            == self.curated.get(p, 0) + sum(self.dead.get(p, {}).values()) + self.duplicates.get(p, 0)
            for p in self.records_in
        )


RESTORE_DEADLINE_S = 120  # longer than transaction_timeout_ms, after which the broker aborts a zombie's txn
LAG_EVERY_S = 5.0


def changelog_topic(app_id: str, raw_topic: str) -> str:
    return f"{app_id}.dedup.{raw_topic}"


class TransactionalProcessor:
    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topics: Topics,
        partners: list[str],
        transformer: Transformer,
        app_id: str = "ketenstroom-processor",
        instance_id: str = "0",
        batch_size: int = 2000,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        self.kafka, self.topics, self.partners = kafka, topics, partners
        self.transformer, self.app_id, self.batch_size = transformer, app_id, batch_size
        self.metrics = metrics or ProcessorMetrics()
        self.raw_topics = [topics.raw(p) for p in partners]
        self.consumer = Consumer(
            kafka.librdkafka(
                group_id=app_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                enable_partition_eof=True,  # for run(until_end=True); other runs skip the events
            )
        )
        self.producer = Producer(
            kafka.librdkafka(
                transactional_id=f"{app_id}-{instance_id}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                transaction_timeout_ms=30_000,
                compression_type="lz4",
            )
        )
        self._seen: dict[tuple[str, int], set[str]] = {}
        self._at_end: set[tuple[str, int]] = set()  # assigned partitions whose last event was EOF
        self.position: dict[tuple[str, int], int] = {}
        self.stats = Reconciliation({}, {}, {}, {})
        self.healthy = False
        self._lag_at = 0.0

    # -- set-up -------------------------------------------------------------------------------------
    def _ensure_changelogs(self) -> None:
        metadata = self.consumer.list_topics(timeout=10)
        for raw in self.raw_topics:
            meta = metadata.topics.get(raw)
            if meta is None or meta.error is not None:
                raise DeliveryError(f"input topic {raw} does not exist; create it with `ketenstroom topics`")
            ensure_topics(
                self.kafka,
                [changelog_topic(self.app_id, raw)],
                partitions=len(meta.partitions),
                config={"cleanup.policy": "compact"},
            )

    def _restore(self, partitions: list[TopicPartition]) -> None:
        """Rebuild the dedup set of each newly assigned partition from its changelog partition."""
        logs = [
            TopicPartition(changelog_topic(self.app_id, tp.topic), tp.partition, OFFSET_BEGINNING)
            for tp in partitions
        ]
        restored: dict[tuple[str, int], set[str]] = {(tp.topic, tp.partition): set() for tp in partitions}
        prefix = f"{self.app_id}.dedup."
        for msg in read_to_end(
            self.kafka, logs, group_id=f"{self.app_id}.restore", deadline_s=RESTORE_DEADLINE_S
        ):
            restored[(msg.topic().removeprefix(prefix), msg.partition())].add(msg.key().decode())
        self._seen.update(restored)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._restore(partitions)
        self._at_end.difference_update((tp.topic, tp.partition) for tp in partitions)
        log.info("assigned %s", [(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._seen.pop((tp.topic, tp.partition), None)
            self._at_end.discard((tp.topic, tp.partition))

    # -- the loop -----------------------------------------------------------------------------------
    def run(
        self,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        stop_at: dict[tuple[str, int], int] | None = None,
        until_end: bool = False,
    ) -> Reconciliation:
        """Process until ``should_stop``, until every partition reached ``stop_at``, or ``until_end``:
        until every assigned partition has reported end-of-partition (committed records only, so
        transaction markers on the input cannot keep it waiting)."""
        self._ensure_changelogs()
        self.producer.init_transactions(30)
        self.consumer.subscribe(self.raw_topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.healthy = True
        try:
            while not should_stop():
                if stop_at is not None and all(
                    self.position.get(tp, 0) >= end for tp, end in stop_at.items()
                ):
                    break
                batch = self.consumer.consume(self.batch_size, timeout=0.5)
                if batch:
                    self._process(batch)
                if until_end and self._caught_up():
                    break
                if time.monotonic() - self._lag_at > LAG_EVERY_S:
                    self._update_lag()
        except KafkaException as exc:
            self.healthy = False
            raise DeliveryError(f"processor failed: {exc}") from exc
        finally:
            self.healthy = False
            self.consumer.close()
            self.producer.flush(10)
        return self.stats

    def _caught_up(self) -> bool:
        assigned = self.consumer.assignment()
        return bool(assigned) and all((tp.topic, tp.partition) in self._at_end for tp in assigned)

    def _process(self, batch: list[Message]) -> None:
        records: list[RawRecord] = []
        last_event_is_eof: dict[tuple[str, int], bool] = {}
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
                last_event_is_eof[(msg.topic(), msg.partition())] = True
                continue
            last_event_is_eof[(msg.topic(), msg.partition())] = False
            _kind, timestamp = msg.timestamp()
            record = RawRecord(
                msg.topic(),
                msg.partition(),
                msg.offset(),
                msg.key(),
                msg.value(),
                tuple((k, v or b"") for k, v in (msg.headers() or ())),
                timestamp,
            )
            records.append(record)
        if records and not self._transact(records):
            return  # aborted and rewound: these partitions are not at their end
        for tp, at_end in last_event_is_eof.items():
            if at_end:
                self._at_end.add(tp)
            else:
                self._at_end.discard(tp)

    def _transact(self, records: list[RawRecord]) -> bool:
        """Transform ``records`` and commit their outcomes in one transaction; False if it was aborted."""
        duplicates: set[tuple[str, int, int]] = set()
        new_ids: list[tuple[RawRecord, str]] = []
        curated, dead = self.transformer.transform_batch(records)
        self.producer.begin_transaction()
        try:
            for item in curated:
                eid = item.event_id
                seen = self._seen.setdefault((item.source.topic, item.source.partition), set())
                if eid in seen:
                    duplicates.add((item.source.topic, item.source.partition, item.source.offset))
                    continue
                seen.add(eid)
                new_ids.append((item.source, eid))
                self.producer.produce(self.topics.curated, key=item.key, value=item.value)
            for letter in dead:
                self.producer.produce(
                    self.topics.dlq(self.topics.partner_of(letter.source.topic)),
                    key=letter.source.key,
                    value=letter.source.value,
                    headers=letter.headers(),
                )
            for source, eid in new_ids:
                self.producer.produce(
                    changelog_topic(self.app_id, source.topic),
                    key=eid.encode(),
                    value=b"1",
                    partition=source.partition,
                )
            offsets = self._next_offsets(records)
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata())
            self.producer.commit_transaction()
        except KafkaException as exc:
            err = exc.args[0]
            for source, eid in new_ids:  # the transaction did not happen: forget what it would have added
                self._seen.get((source.topic, source.partition), set()).discard(eid)
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                self.producer.abort_transaction()
                self._rewind(records)
                return False
            raise
        self._count(records, curated, dead, duplicates)
        return True

    def _update_lag(self) -> None:
        self._lag_at = time.monotonic()
        for tp in self.consumer.assignment():
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)
            lag = max(0, high - self.position.get((tp.topic, tp.partition), 0))
            self.metrics.lag.labels(self.topics.partner_of(tp.topic), str(tp.partition)).set(lag)

    def _next_offsets(self, records: list[RawRecord]) -> list[TopicPartition]:
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
        return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]

    def _rewind(self, records: list[RawRecord]) -> None:
        """After an aborted transaction, consume the batch again from its first offsets."""
        first: dict[tuple[str, int], int] = {}
        for r in records:
            first[(r.topic, r.partition)] = min(first.get((r.topic, r.partition), r.offset), r.offset)
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _count(
        self,
        records: list[RawRecord],
        curated: list[Curated],
        dead: list[DeadLetter],
        duplicates: set[tuple[str, int, int]],
    ) -> None:
        now = time.time()
        s, m = self.stats, self.metrics
        for r in records:
            partner = self.topics.partner_of(r.topic)
            s.records_in[partner] = s.records_in.get(partner, 0) + 1
            m.records_in.labels(partner).inc()
            self.position[(r.topic, r.partition)] = r.offset + 1
        for item in curated:
            partner = self.topics.partner_of(item.source.topic)
            if (item.source.topic, item.source.partition, item.source.offset) in duplicates:
                continue
            s.curated[partner] = s.curated.get(partner, 0) + 1
            m.curated.labels(partner).inc()
            m.last_event_time.labels(partner).set(item.event_time)
            if item.source.timestamp_ms:
                m.latency.labels(partner).observe(max(0.0, now - item.source.timestamp_ms / 1000))
        for letter in dead:
            partner = self.topics.partner_of(letter.source.topic)
            reasons = s.dead.setdefault(partner, {})
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
            m.dead.labels(partner, letter.reason).inc()
        for topic, _partition, _offset in duplicates:
            partner = self.topics.partner_of(topic)
            s.duplicates[partner] = s.duplicates.get(partner, 0) + 1
            m.duplicates.labels(partner).inc()
