"""The processor's transactional calls are bounded: a coordinator that does not answer (its broker was
SIGKILLed, a leader is gone) makes the processor exit with a clear error, never wait forever where a
stop request (SIGTERM) is not looked at. A stub producer stands for librdkafka: called without a
timeout it would block for good (the test fails at once instead of hanging), with one it times out as
librdkafka does. No broker."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ketenstroom.adapters.kafka import high_watermarks, read_to_end
from ketenstroom.errors import DeliveryError, StopRequested
from ketenstroom.settings import KafkaSettings
from processors.transform import Curated
from tests.unit.processor_standin import processor_standin

TXN_TIMEOUT_MS = 30_000


class UnansweredCoordinator:
    """librdkafka's transactional calls against a coordinator that never answers."""

    def __init__(self, *, abortable: bool = False) -> None:
        self.abortable = abortable
        self.calls: list[tuple[str, float | None]] = []

    def _blocks(self, name: str, timeout: float | None) -> None:
        self.calls.append((name, timeout))
        if timeout is None or timeout < 0:
            pytest.fail(f"{name} without a timeout blocks for as long as the coordinator does not answer")
        assert timeout <= TXN_TIMEOUT_MS / 1000, f"{name} waits {timeout} s, longer than the transaction"
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{name} timed out", retriable=True))

    def begin_transaction(self) -> None:
        self.calls.append(("begin_transaction", None))

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def produce_batch(self, _topic: str, messages: list[dict[str, Any]]) -> int:
        return len(messages)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(self, _offsets: Any, _meta: Any, timeout: float | None = None) -> None:
        self.calls.append(("send_offsets_to_transaction", timeout))
        if self.abortable:  # e.g. a partition leader gone while the batch's records were in flight
            raise KafkaException(KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True))
        if timeout is None or timeout < 0:
            pytest.fail("send_offsets_to_transaction without a timeout can block forever")

    def commit_transaction(self, timeout: float | None = None) -> None:
        self._blocks("commit_transaction", timeout)

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._blocks("abort_transaction", timeout)


def _processor(producer: UnansweredCoordinator) -> Any:
    return processor_standin(
        producer,
        transform=lambda r: Curated(key=b"k", value=b"v", event_id=f"e{r.offset}", event_time=0, source=r),
        new_state=_State,
        txn_call_s=TXN_TIMEOUT_MS / 1000,
    )


class _State:
    """A partition's dedup state that remembers nothing (this test is about the transaction)."""

    def add(self, _event_id: str, _ts: int | None) -> bool:
        return True

    def changelog(self) -> list[Any]:
        return []

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def _batch() -> list[Any]:
    def msg(offset: int) -> Any:
        return SimpleNamespace(
            topic=lambda: "raw.om",
            partition=lambda: 0,
            offset=lambda: offset,
            key=lambda: b"k",
            value=lambda: b"v",
            headers=lambda: None,
            timestamp=lambda: (1, 1_700_000_000_000),
            error=lambda: None,
        )

    return [msg(o) for o in range(3)]


def test_a_commit_the_coordinator_never_answers_ends_in_a_clear_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("processors.runner.produce_changelog", lambda *_a: 0)
    producer = UnansweredCoordinator()
    with pytest.raises(
        DeliveryError, match=r"could not commit the transaction of a batch of 3 records within 30 s"
    ):
        _processor(producer)._transact(_batch())
    assert ("commit_transaction", 30.0) in producer.calls


def test_an_abort_the_coordinator_never_answers_ends_in_a_clear_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("processors.runner.produce_changelog", lambda *_a: 0)
    producer = UnansweredCoordinator(abortable=True)
    with pytest.raises(DeliveryError, match=r"could not abort the transaction of a batch of 3 records"):
        _processor(producer)._transact(_batch())
    assert ("abort_transaction", 30.0) in producer.calls


def test_a_stop_request_ends_a_read_to_the_end_that_cannot_finish() -> None:
    """The dedup restore reads changelog partitions to their end; with their leader gone (here: no
    broker at all) no end is ever reported. SIGTERM must end the wait at once, not after the
    restore's deadline (120 s), and with an error: a partial dedup state would let duplicates pass."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    asked = time.monotonic() + 0.5  # the stop request comes half a second into the read
    started = time.monotonic()
    with pytest.raises(StopRequested, match=r"stopped while reading \[\('t.dedup.raw.om', 0\)\]"):
        for _ in read_to_end(
            kafka,
            [TopicPartition("t.dedup.raw.om", 0, 0)],
            group_id="t.restore",
            deadline_s=120,
            should_stop=lambda: time.monotonic() > asked,
        ):
            pass
    assert time.monotonic() - started < 10  # not the 120 s deadline


def test_high_watermarks_without_an_answer_leave_the_partitions_out_within_the_timeout() -> None:
    """The restore asks the changelogs' ends first. With a leader gone the listing's futures are still
    pending at the timeout: that is "unknown" (left out, as documented), not a crash: a TimeoutError
    from here once ended the processor in the broker-loss test ("exit 1: TimeoutError")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    ends = high_watermarks(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"),
        [TopicPartition("t.dedup.raw.om", p) for p in range(3)],
        timeout=1.0,
    )
    assert ends == {}
    assert time.monotonic() - started < 5  # one bound for all partitions, not one each
