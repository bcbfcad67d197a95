"""The runtime's Kafka pieces that need no broker: client log levels, static member ids, letter status."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ketenstroom.adapters.kafka import ConsumeLoop, _committed, static_member
from ketenstroom.settings import ClientLog, KafkaSettings, ProcessorSettings, SinkSettings
from processors.dlq import REPLAY_KEY_HEADER, LetterStatus, letter_key, replay_key


def test_every_client_logs_through_python_logging() -> None:
    conf = KafkaSettings().librdkafka(group_id="g")
    assert isinstance(conf["logger"], ClientLog)


@pytest.mark.parametrize(
    ("level", "facility", "text", "expected"),
    [
        (
            logging.WARNING,
            "GETPID",
            "Failed to acquire idempotence PID: Coordinator load in progress: retrying",
            logging.DEBUG,
        ),
        (logging.INFO, "BGQUEUE", "Purging 1 unserved events from background queue", logging.DEBUG),
        (logging.WARNING, "SESSTMOUT", "Consumer group session timed out", logging.WARNING),
        (logging.ERROR, "FAIL", "Connect to ipv4#127.0.0.1:1 failed: Connection refused", logging.ERROR),
    ],
)
def test_librdkafka_lines_get_a_sensible_level(
    level: int, facility: str, text: str, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    log = ClientLog(logging.getLogger("ketenstroom.kafka.client"))
    with caplog.at_level(logging.DEBUG, logger="ketenstroom.kafka.client"):
        log.log(level, "%s [%s] %s", facility, "rdkafka#producer-1", text)
    (record,) = caplog.records
    assert record.levelno == expected and text in record.getMessage()


def test_a_static_member_is_its_instance_and_its_subscription() -> None:
    one = static_member("ketenstroom-processor", "0", ["raw.om", "raw.cjib"])
    assert one == static_member("ketenstroom-processor", "0", ["raw.cjib", "raw.om"])  # order-free
    assert one.startswith("ketenstroom-processor.0.")
    assert one != static_member("ketenstroom-processor", "1", ["raw.om", "raw.cjib"])
    assert one != static_member("ketenstroom-processor", "0", ["raw.om"])  # other topics: a new member


def test_the_loop_joins_as_a_static_member_only_with_an_instance_id() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with ConsumeLoop(kafka, group_id="g", topics=["t"], instance_id="a") as static:
        assert static.member == static_member("g", "a", ["t"])
    with ConsumeLoop(kafka, group_id="g", topics=["t"]) as dynamic:
        assert dynamic.member is None
    with pytest.raises(ValueError, match="either topics"):
        ConsumeLoop(kafka, group_id="g")


def test_component_defaults_live_in_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ProcessorSettings().app_id == "ketenstroom-processor"
    assert SinkSettings().group_id == "ketenstroom-sink"
    monkeypatch.setenv("KETENSTROOM_SINK_INSTANCE_ID", "b")
    assert SinkSettings().instance_id == "b"
    with pytest.raises(ValueError, match="extra"):
        ProcessorSettings(group="x")  # type: ignore[call-arg]  # an unknown key is rejected, on purpose


def test_a_dead_letter_is_keyed_by_its_event_or_its_bytes() -> None:
    assert letter_key("om-123-1", b"whatever") == "om-123-1"
    assert letter_key(None, b"\x00junk") == letter_key(None, b"\x00junk") != letter_key(None, b"\x00other")
    assert letter_key(None, b"\x00junk").startswith("sha256:")
    assert replay_key([("x", b"1"), (REPLAY_KEY_HEADER, b"om-123-1")]) == "om-123-1"
    assert replay_key([("x", b"1")]) is None
    status = LetterStatus("dead", "unknown-code", "transform", replayed=True)
    assert LetterStatus.decode(status.encode()) == status


class _MovingCoordinator:
    """A consumer whose group coordinator answers "not coordinator" ``failures`` times, then offsets."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_COORDINATOR) -> None:
        self.failures, self.code, self.asked = failures, code, 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        if self.asked <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]

    def poll(self, _timeout: float) -> None:
        return None


def test_committed_offsets_are_asked_again_while_the_coordinator_moves() -> None:
    consumer = _MovingCoordinator(failures=2)
    found = _committed(consumer, [TopicPartition("raw.om", 0)], timeout=5)  # type: ignore[arg-type]
    assert [tp.offset for tp in found] == [7] and consumer.asked == 3
    with pytest.raises(KafkaException):  # not a passing condition: raised at once
        _committed(_MovingCoordinator(1, KafkaError.TOPIC_AUTHORIZATION_FAILED), [], timeout=5)  # type: ignore[arg-type]
    with pytest.raises(KafkaException):  # still moving at the deadline
        _committed(_MovingCoordinator(10**9), [], timeout=0.05)  # type: ignore[arg-type]


class _Event:
    def __init__(self, eof: bool = False) -> None:
        self.eof = eof

    def error(self) -> object | None:
        return "EOF" if self.eof else None


class _StandIn:
    """librdkafka's consume as a script: each call takes the next list (or nothing), timeouts noted."""

    def __init__(self, script: list[list[_Event]]) -> None:
        self.script, self.timeouts = script, []

    def consume(self, num_messages: int, timeout: float) -> list[_Event]:
        self.timeouts.append(timeout)
        return self.script.pop(0)[:num_messages] if self.script else []

    def assignment(self) -> list[int]:
        return [0, 1]

    def close(self) -> None:
        pass


def test_return_at_eof_only_ends_batches_early_after_a_full_one() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    loop = ConsumeLoop(
        kafka, group_id="g", topics=["t"], batch_size=3, poll_timeout_s=9.0, return_at_eof=True
    )
    loop.consumer.close()
    stand_in = _StandIn([[_Event()], [_Event(), _Event(), _Event()], [_Event(), _Event(True)], [_Event()]])
    loop.consumer = stand_in  # type: ignore[assignment]
    # a trickle: one plain consume with the poll timeout, as without the option
    assert len(loop._next_events()) == 1 and stand_in.timeouts == [9.0]
    assert len(loop._next_events()) == 3  # full: the next batches may end at an EOF
    assert stand_in.timeouts == [9.0, 9.0]
    assert len(loop._next_events()) == 2  # a record and an EOF: handed over at once
    assert stand_in.timeouts == [9.0, 9.0, 0]
    loop._eager_left = 0  # the budget after a full batch spent: a trickle is batched per timeout again
    assert len(loop._next_events()) == 1 and stand_in.timeouts[-1] == 9.0
