"""The processor's start-up, side by side where that is safe, and in order where it must be:

* state topics (a thread), the group join and ``init_transactions`` run at once, and no assignment is
  restored before all of them are done (a restore before ``init_transactions`` fenced a predecessor
  could miss what its last transaction commits);
* a run with an end (``until_end``, ``stop_at``) hands its last batch over at EOF.

Stand-ins for librdkafka's clients; no broker. Every wait is bounded by a deadline."""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ketenstroom.errors import DeliveryError
from processors.runner import TransactionalProcessor, _init_failed

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


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "may not use transactional id app-\\*"),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "may not use transactional id app-\\*"),
        (KafkaError._TIMED_OUT, "did not answer in time"),
        (KafkaError.COORDINATOR_NOT_AVAILABLE, "did not answer in time"),
    ],
)
def test_init_transactions_failing_blames_the_acls_only_when_they_refused(code: int, said: str) -> None:
    error = _init_failed(KafkaException(KafkaError(code, "x")), "User:test", "app")
    assert re.search(said, str(error)), str(error)
    assert ("access apply" in str(error)) == ("may not" in said)
