"""The processor's start-up and transaction, side by side where that is safe, and in order where it must be:

* start-up: state topics (a thread), the group join and ``init_transactions`` run at once, and no
  assignment is restored before all of them are done (a restore before ``init_transactions`` fenced a
  predecessor could miss what its last transaction commits);
* a batch's offsets are sent to its transaction while the batch is transformed, and awaited before the
  commit and before an abort;
* a run with an end (``until_end``, ``stop_at``) hands its last batch over at EOF.

Stand-ins for librdkafka's clients; no broker. Every wait is bounded by a deadline."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ketenstroom.errors import DeliveryError
from ketenstroom.settings import ProcessorSettings
from processors.dedup import Horizon, PartitionDedup
from processors.runner import TransactionalProcessor
from processors.transform import Curated, RawRecord
from tests.unit.processor_standin import processor_standin

DEADLINE_S = 5.0
TS = 1_700_000_000_000


def _wait(event: threading.Event) -> bool:
    return event.wait(DEADLINE_S)


class StartProducer:
    """``list_topics`` and ``init_transactions``, recorded; ``init_transactions`` waits until the state
    topics have started (``started``), and they wait until it has (``initialising``): both can only
    finish if they run at once."""

    def __init__(self, started: threading.Event, *, refuse: bool = False) -> None:
        self.started, self.refuse = started, refuse
        self.initialising = threading.Event()
        self.calls: list[str] = []

    def list_topics(self, timeout: float) -> None:
        self.calls.append("list_topics")

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init_transactions")
        self.initialising.set()
        if not _wait(self.started):
            raise AssertionError("the state topics were not being made while init_transactions ran")
        if self.refuse:
            raise KafkaException(KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "denied"))
        self.calls.append("initialised")


def _starting(producer: StartProducer, started: threading.Event, log: list[str]) -> Any:
    proc: Any = object.__new__(TransactionalProcessor)
    proc.producer, proc.app_id, proc._ready = producer, "app", False
    proc.kafka = SimpleNamespace(principal="User:test")
    proc.loop = SimpleNamespace(start=lambda: log.append("joining"))

    def state_topics() -> None:
        started.set()
        if not _wait(producer.initialising):
            raise AssertionError("init_transactions did not run while the state topics were made")
        log.append("state topics")

    proc._ensure_state_topics = state_topics
    proc._restore = lambda tps: log.append(f"restore {len(tps)}")
    return proc


def test_start_up_runs_state_topics_join_and_init_transactions_side_by_side() -> None:
    started = threading.Event()
    log: list[str] = []
    producer = StartProducer(started)
    proc = _starting(producer, started, log)
    # an assignment served before start-up is done (``close`` after a failed start) is not restored
    proc._on_assign([TopicPartition("raw.om", 0)])
    assert log == []
    proc._start()
    assert producer.calls == ["list_topics", "init_transactions", "initialised"]
    assert sorted(log) == ["joining", "state topics"]
    proc._on_assign([TopicPartition("raw.om", 0), TopicPartition("raw.om", 1)])
    assert log[-1] == "restore 2"


def test_a_refused_transactional_id_is_reported_after_the_state_topics_thread_ends() -> None:
    started = threading.Event()
    log: list[str] = []
    proc = _starting(StartProducer(started, refuse=True), started, log)
    with pytest.raises(DeliveryError, match="may not use transactional id app-"):
        proc._start()
    assert "state topics" in log  # the thread was awaited, not left running (the conftest checks too)
    proc._on_assign([TopicPartition("raw.om", 0)])
    assert "restore 1" not in log


class OverlappingProducer:
    """Its ``send_offsets_to_transaction`` returns only once the transform has begun, and the transform
    begins only once the offsets are being sent (``_overlapping``): the batch can only finish if the
    two overlap. Records what it is asked, in order."""

    def __init__(self, transforming: threading.Event, *, fail_offsets: bool = False) -> None:
        self.transforming, self.fail_offsets = transforming, fail_offsets
        self.sending = threading.Event()
        self.calls: list[str] = []
        self.offsets: list[list[TopicPartition]] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _meta: Any, _timeout: float) -> None:
        self.sending.set()
        if not _wait(self.transforming):
            raise AssertionError("the offsets were not sent while the batch was transformed")
        self.offsets.append(offsets)
        if self.fail_offsets:
            raise KafkaException(KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True))
        self.calls.append("offsets sent")

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def produce_batch(self, _topic: str, messages: list[dict[str, Any]]) -> int:
        self.calls.append("produce_batch")
        return len(messages)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")


def _msg(offset: int) -> Any:
    return SimpleNamespace(
        topic=lambda: "raw.om",
        partition=lambda: 0,
        offset=lambda: offset,
        key=lambda: b"k",
        value=f"e{offset}".encode,
        headers=lambda: None,
        timestamp=lambda: (1, TS + offset),
        error=lambda: None,
    )


def _overlapping(producer: OverlappingProducer, transforming: threading.Event) -> Any:
    def transform(record: RawRecord) -> Curated:
        transforming.set()
        if not _wait(producer.sending):
            raise AssertionError("the batch was transformed before its offsets were being sent")
        return Curated(b"k", record.value or b"", record, (record.value or b"").decode(), 1.0)

    horizon = Horizon.of(ProcessorSettings())
    return processor_standin(producer, transform=transform, new_state=lambda: PartitionDedup(horizon))


def test_a_batch_sends_its_offsets_while_it_is_transformed_and_commits_after_they_are_sent() -> None:
    transforming = threading.Event()
    producer = OverlappingProducer(transforming)
    proc = _overlapping(producer, transforming)
    started = time.monotonic()
    assert proc._transact([_msg(o) for o in range(3)])
    assert time.monotonic() - started < DEADLINE_S
    assert producer.offsets == [[TopicPartition("raw.om", 0, 3)]]
    assert producer.calls[0] == "begin" and producer.calls[-1] == "commit"
    assert producer.calls.index("offsets sent") < producer.calls.index("commit")
    assert proc.stats.curated == {"om": 3}


def test_offsets_refused_abort_the_batch_after_the_send_ended_and_forget_its_ids() -> None:
    transforming = threading.Event()
    producer = OverlappingProducer(transforming, fail_offsets=True)
    proc = _overlapping(producer, transforming)
    rewound: list[list[TopicPartition]] = []
    proc.loop.rewind = rewound.append
    assert proc._transact([_msg(o) for o in range(3)]) is False
    assert "commit" not in producer.calls and producer.calls[-1] == "abort"
    assert rewound == [[TopicPartition("raw.om", 0, 0)]]
    assert len(proc._dedup[("raw.om", 0)]) == 0  # the ids of the aborted batch are forgotten
    assert proc.stats.curated == {}


@pytest.mark.parametrize(
    ("kwargs", "eager"),
    [({"until_end": True}, True), ({"stop_at": {("raw.om", 0): 5}}, True), ({}, False)],
)
def test_only_a_run_with_an_end_hands_its_last_batch_over_at_eof(kwargs: dict[str, Any], eager: bool) -> None:
    proc: Any = object.__new__(TransactionalProcessor)
    seen: list[bool] = []

    def start() -> None:
        seen.append(proc.loop.return_at_eof)
        raise DeliveryError("stop here")

    proc._start = start
    proc.loop = SimpleNamespace(return_at_eof=None, close=lambda: None)
    proc.producer = SimpleNamespace(flush=lambda _t: 0)
    with pytest.raises(DeliveryError, match="stop here"):
        proc.run(**kwargs)
    assert seen == [eager]


class SlowOffsets(OverlappingProducer):
    """Its offsets are still being sent when the transform fails: they are sent until an abort begins,
    or for ``NEVER_S`` at most (an abort while they are sent would overlap two transactional calls)."""

    NEVER_S = 0.5

    def __init__(self) -> None:
        super().__init__(threading.Event())
        self.aborting = threading.Event()

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _meta: Any, _timeout: float) -> None:
        self.sending.set()
        self.aborting.wait(self.NEVER_S)
        self.calls.append("offsets sent")

    def abort_transaction(self, _timeout: float) -> None:
        self.aborting.set()
        self.calls.append("abort")


def test_a_failing_transform_aborts_only_after_the_offsets_were_sent() -> None:
    producer = SlowOffsets()

    def transform(_record: RawRecord) -> Curated:
        _wait(producer.sending)
        raise ValueError("a bug in the transform")

    proc = processor_standin(
        producer, transform=transform, new_state=lambda: PartitionDedup(Horizon.of(ProcessorSettings()))
    )
    with pytest.raises(ValueError, match="a bug in the transform"):
        proc._transact([_msg(0)])
    assert producer.calls == ["begin", "offsets sent", "abort"]
