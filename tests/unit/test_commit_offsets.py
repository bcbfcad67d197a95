"""``commit_offsets`` tells a commit's failures apart: the group moved on (go on, read again), no answer
(transient: back off and try again), anything else or fatal (stop). A stand-in consumer raises what
librdkafka raises; the integration test in ``test_clean_stop.py`` meets the real "unknown member"."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ketenstroom.adapters.kafka import commit_offsets
from ketenstroom.errors import BrokerUnavailable, is_transient

OFFSETS = [TopicPartition("curated.chain-events", 0, 42)]


class _Consumer:
    def __init__(self, error: KafkaError | None = None, partition_error: KafkaError | None = None) -> None:
        self.error, self.partition_error = error, partition_error
        self.calls = 0

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[SimpleNamespace]:
        assert asynchronous is False
        self.calls += 1
        if self.error is not None:
            raise KafkaException(self.error)
        # as librdkafka answers: each partition with its own error or None (TopicPartition.error is
        # read-only from Python, so the stand-in answers with plain objects)
        return [
            SimpleNamespace(error=self.partition_error if i == 0 else None) for i, _ in enumerate(offsets)
        ]


def _commit(consumer: _Consumer) -> bool:
    return commit_offsets(consumer, OFFSETS, what="test")  # type: ignore[arg-type]


def test_a_commit_that_succeeds_says_so() -> None:
    consumer = _Consumer()
    assert _commit(consumer) is True and consumer.calls == 1


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError._ASSIGNMENT_LOST,
    ],
)
def test_the_group_moving_on_is_not_a_failure(code: int, caplog: pytest.LogCaptureFixture) -> None:
    assert _commit(_Consumer(KafkaError(code))) is False
    assert "the group moved on" in caplog.text


def test_a_partition_refused_in_an_answered_commit_counts_the_same() -> None:
    assert _commit(_Consumer(partition_error=KafkaError(KafkaError.ILLEGAL_GENERATION))) is False
    with pytest.raises(KafkaException):
        _commit(_Consumer(partition_error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError.NOT_COORDINATOR),
        KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS),
        KafkaError(KafkaError.REQUEST_TIMED_OUT),
        KafkaError(KafkaError._TIMED_OUT),
        KafkaError(KafkaError._TRANSPORT),
        KafkaError(KafkaError._FAIL, retriable=True),  # librdkafka's own verdict counts
    ],
)
def test_no_answer_is_transient(error: KafkaError) -> None:
    with pytest.raises(BrokerUnavailable) as raised:
        _commit(_Consumer(error))
    assert is_transient(raised.value)


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED),
        KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE),
        # a second instance with this one's group.instance.id fenced it: fatal, even if it looks moved on
        KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True),
        KafkaError(KafkaError.UNKNOWN_MEMBER_ID, fatal=True),
    ],
)
def test_anything_else_stops_the_caller(error: KafkaError) -> None:
    with pytest.raises(KafkaException) as raised:
        _commit(_Consumer(error))
    assert not is_transient(raised.value)
