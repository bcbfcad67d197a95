"""The runner's per-batch structures: runs of one partition's records, one ``produce_batch`` per batch,
dedup across and within batches, offsets, counts and the bulk latency histogram. A stub producer
records what librdkafka would be asked; the dedup state is the real ``PartitionDedup``. No broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ketenstroom.errors import BrokerUnavailable
from ketenstroom.settings import KafkaSettings, ProcessorSettings
from processors.dedup import Horizon, PartitionDedup
from processors.metrics import observe_many
from processors.progress import Reconciliation
from processors.runner import Run, TransactionalProcessor
from processors.transform import Curated, DeadLetter, RawRecord
from tests.unit.processor_standin import processor_standin

TS = 1_700_000_000_000


def _msg(topic: str, partition: int, offset: int, event_id: str, headers: Any = None) -> Any:
    return SimpleNamespace(
        topic=lambda: topic,
        partition=lambda: partition,
        offset=lambda: offset,
        key=event_id.encode,
        value=event_id.encode,
        headers=lambda: headers,
        timestamp=lambda: (1, TS + offset),
        error=lambda: None,
    )


class Producer:
    """What the runner asks of librdkafka's transactional producer, recorded."""

    def __init__(self, *, room: int | None = None) -> None:
        self.room = room  # how many curated events produce_batch queues before its queue is "full"
        self.calls: list[str] = []
        self.curated: list[tuple[bytes, bytes]] = []
        self.other: list[tuple[str, bytes | None]] = []
        self.offsets: list[list[TopicPartition]] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None, **_kw: Any) -> None:
        self.other.append((topic, value))

    def produce_batch(self, topic: str, messages: list[dict[str, Any]]) -> int:
        self.calls.append("produce_batch")
        queued = len(messages) if self.room is None else min(self.room, len(messages))
        for m in messages[queued:]:
            m["_error"] = "Local: Queue full"
        self.curated.extend((m["key"], m["value"]) for m in messages[:queued])
        return queued

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _meta: Any, _timeout: float) -> None:
        self.offsets.append(offsets)

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")


def _transform(record: RawRecord) -> Curated | DeadLetter:
    """Stands for the transform: the value is the event id; ``bad-*`` ids are dead letters."""
    event_id = (record.value or b"").decode()
    if event_id.startswith("bad"):
        return DeadLetter(record, "unknown-code", "transform", "code X of OM.FEIT", event_id)
    return Curated(event_id.encode(), f"curated {event_id}".encode(), record, event_id, 1.0)


def _processor(producer: Producer) -> Any:
    rewound: list[list[TopicPartition]] = []
    horizon = Horizon.of(ProcessorSettings())
    proc = processor_standin(
        producer, transform=_transform, new_state=lambda: PartitionDedup(horizon), rewind=rewound.append
    )
    proc.rewound = rewound
    return proc


def test_records_come_with_their_runs_of_one_partition() -> None:
    batch = [
        _msg("raw.om", 0, 10, "a"),
        _msg("raw.om", 0, 11, "b"),
        _msg("raw.om", 1, 5, "c"),
        _msg("raw.politie", 1, 7, "d", headers=[("h", "v")]),
        _msg("raw.om", 0, 12, "e"),
    ]
    records, runs = TransactionalProcessor._records(batch)
    assert [r.offset for r in records] == [10, 11, 5, 7, 12]
    assert records[3] == RawRecord("raw.politie", 1, 7, b"d", b"d", (("h", b"v"),), TS + 7)
    assert runs == [
        Run("raw.om", 0, 0, 2),
        Run("raw.om", 1, 2, 3),
        Run("raw.politie", 1, 3, 4),
        Run("raw.om", 0, 4, 5),
    ]
    # a partition met in two runs resumes past the last record of both
    assert TransactionalProcessor._next_offsets(records, runs) == [
        TopicPartition("raw.om", 0, 13),
        TopicPartition("raw.om", 1, 6),
        TopicPartition("raw.politie", 1, 8),
    ]
    assert TransactionalProcessor._records([]) == ([], [])


def test_duplicates_within_a_batch_and_across_batches_are_dropped_once_each() -> None:
    producer = Producer()
    proc = _processor(producer)
    first = [
        _msg("raw.om", 0, 0, "e1"),
        _msg("raw.om", 0, 1, "e2"),
        _msg("raw.om", 1, 0, "e1"),  # another partition: its own dedup state (as the changelog is keyed)
        _msg("raw.om", 0, 2, "e1"),  # within the batch
        _msg("raw.om", 0, 3, "bad-1"),
    ]
    assert proc._transact(first)
    second = [_msg("raw.om", 0, 4, "e2"), _msg("raw.om", 0, 5, "e3"), _msg("raw.om", 0, 6, "e3")]
    assert proc._transact(second)
    assert producer.calls == ["begin", "produce_batch", "commit", "begin", "produce_batch", "commit"]
    # in order, each id once per partition, dead letter and duplicates left out
    assert producer.curated == [
        (b"e1", b"curated e1"),
        (b"e2", b"curated e2"),
        (b"e1", b"curated e1"),
        (b"e3", b"curated e3"),
    ]
    assert [tp.offset for tp in producer.offsets[1]] == [7]
    stats = proc.stats
    assert stats.records_in == {"om": 8} and stats.curated == {"om": 4} and stats.duplicates == {"om": 3}
    assert stats.dead == {"om": {"unknown-code": 1}} and stats.reconciles()
    assert stats.position == {("raw.om", 0): 7, ("raw.om", 1): 1}
    assert proc._last_ts == {("raw.om", 0): TS + 6, ("raw.om", 1): TS}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in proc.metrics.registry.collect()
        for s in metric.samples
    }
    assert samples[("ketenstroom_processor_latency_seconds_count", (("partner", "om"),))] == 4
    assert samples[("ketenstroom_processor_records_in_total", (("partner", "om"),))] == 8


def test_a_batch_librdkafka_cannot_queue_whole_is_aborted_rewound_and_forgotten() -> None:
    producer = Producer(room=1)
    proc = _processor(producer)
    batch = [_msg("raw.om", 0, 3, "e1"), _msg("raw.om", 0, 4, "e2")]
    with pytest.raises(BrokerUnavailable, match=r"only 1 of the batch's 2 curated events could be queued"):
        proc._transact(batch)
    assert producer.calls[-1] == "abort" and "commit" not in producer.calls
    assert proc.rewound == [[TopicPartition("raw.om", 0, 3)]]
    assert proc.stats.records_in == {}
    # the ids of the aborted batch are forgotten: tried again, both are curated
    producer.room = None
    assert proc._transact(batch)
    assert producer.curated[-2:] == [(b"e1", b"curated e1"), (b"e2", b"curated e2")]


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.01, 0.010001, 0.05, 0.3, 1.0, 299.0, 300.0, 301.0, 1e9],
        [],
        [7.5] * 5,
        list(np.linspace(0, 400, 97)),
    ],
)
def test_observe_many_exposes_exactly_what_observe_does(values: list[float]) -> None:
    buckets = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("lat", "latency", ["partner"], registry=one, buckets=buckets)
    h2 = Histogram("lat", "latency", ["partner"], registry=many, buckets=buckets)
    child = h1.labels("om")  # the child exists before any observation, as in the runner
    for v in values:
        child.observe(v)
    observe_many(h2.labels("om"), np.array(values, dtype=np.float64))

    def lines(registry: CollectorRegistry) -> list[str]:  # the _created sample differs by its clock
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert lines(many) == lines(one)


def test_restore_asks_again_for_changelog_ends_not_answered_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A changelog created a moment before answers "not leader" for a while: asked again, not read
    whole (a consumer's start and EOF wait); one that never answers is left unknown at the deadline."""
    from processors import dedup

    asked: list[list[tuple[str, int]]] = []
    bounds: list[float] = []
    answers = iter([{("log", 0): 0}, {}, {("log", 1): 5}])

    def high_watermarks(
        _kafka: Any, partitions: list[TopicPartition], *, timeout: float, admin: Any = None
    ) -> dict[Any, int]:
        assert timeout > 0
        asked.append([(tp.topic, tp.partition) for tp in partitions])
        bounds.append(timeout)
        return next(answers)

    monkeypatch.setattr(dedup, "high_watermarks", high_watermarks)
    logs = [("log", 0), ("log", 1)]
    assert dedup._watermarks(KafkaSettings(), logs, deadline_s=5.0) == {("log", 0): 0, ("log", 1): 5}
    assert asked == [logs, [("log", 1)], [("log", 1)]]
    # the first ask waits as long as high_watermarks does; asking again is bounded short and doubled (an
    # ask of a partition just created sometimes hangs for seconds where a new one answers at once)
    assert bounds == [10.0, dedup.REASK_BOUND_S, 2 * dedup.REASK_BOUND_S]

    monkeypatch.setattr(dedup, "high_watermarks", lambda *_a, **_k: {})
    assert dedup._watermarks(KafkaSettings(), logs, deadline_s=0.0) == {}


def test_a_partition_read_to_its_end_counts_as_done_even_with_nothing_processed() -> None:
    """``--until-caught-up`` after a kill: the stop offsets may predate offsets the predecessor
    committed, so nothing is left to process there; the consumer's end-of-partition says so."""
    stats = Reconciliation(position={("raw.om", 0): 10})
    stop_at = {("raw.om", 0): 10, ("raw.om", 1): 7, ("raw.om", 2): 0}
    assert not stats.done(stop_at)  # partition 1: nothing processed, end not reached
    assert not stats.done(stop_at, reached={("raw.om", 2)})  # an empty partition's end proves nothing
    assert stats.done(stop_at, reached={("raw.om", 1)})
