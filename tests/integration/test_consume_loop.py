"""``ConsumeLoop(return_at_eof=True)`` hands the last records of a partition over with its EOF, instead
of holding them until the poll timeout has passed (librdkafka's ``consume`` waits for a full batch)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ketenstroom.adapters.kafka import ConsumeLoop, ensure_topics
from ketenstroom.contract import Topics
from tests.conftest import Services

TIMEOUT_S = 20.0  # far longer than a fetch from the local broker takes, even on a busy machine


def test_a_partial_batch_comes_back_at_the_end_of_the_partitions(services: Services, names: Topics) -> None:
    topic = names.raw("om")
    ensure_topics(services.kafka, [topic], partitions=2, replication_factor=1)
    producer = Producer(services.kafka.librdkafka())
    for n in range(250):  # two full batches of 100, then the end of both partitions
        producer.produce(topic, key=str(n).encode(), value=f"record {n}".encode(), partition=n % 2)
    assert producer.flush(30) == 0
    loop = ConsumeLoop(
        services.kafka,
        group_id=f"{names.prefix}eager",
        topics=[topic],
        batch_size=100,
        poll_timeout_s=TIMEOUT_S,
        return_at_eof=True,
    )
    seen: list[bytes] = []
    waits: list[float] = []
    with loop:
        started = time.monotonic()
        for records in loop.batches(stop=lambda: len(loop.at_end) == 2):
            waits.append(time.monotonic() - started)
            seen += [m.value() or b"" for m in records]
            started = time.monotonic()
    assert sorted(seen) == sorted(f"record {n}".encode() for n in range(250))
    assert loop.eof_offset == {(topic, 0): 125, (topic, 1): 125}
    # every batch came back well before the poll timeout: the last, partial one at an EOF, not at the
    # timeout (without ``return_at_eof`` it waits out all 20 s)
    assert max(waits) < TIMEOUT_S / 2, waits


def _members(admin: AdminClient, group: str) -> int:
    try:
        return len(admin.describe_consumer_groups([group])[group].result(timeout=10).members)
    except KafkaException:
        return 0


def test_a_caller_that_overran_the_poll_interval_rejoins_and_reads_on(
    services: Services, names: Topics
) -> None:
    """The caller's work between two batches outlasts ``max.poll.interval.ms`` (a seal of a large period
    on a busy machine): librdkafka leaves the group and reports ``_MAX_POLL_EXCEEDED`` on the next
    consume. That is no failure of the records: the loop says so, rejoins and reads on from the last
    commit, nothing skipped (it used to raise DeliveryError, ending the processor or sink with exit 2)."""
    topic = names.raw("om")
    ensure_topics(services.kafka, [topic], partitions=1, replication_factor=1)
    producer = Producer(services.kafka.librdkafka())
    for n in range(30):
        producer.produce(topic, value=f"record {n}".encode(), partition=0)
    assert producer.flush(30) == 0
    group = f"{names.prefix}overrun"
    loop = ConsumeLoop(
        services.kafka,
        group_id=group,
        topics=[topic],
        batch_size=10,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=7000,
    )
    offsets: list[int] = []
    with loop:
        batches = loop.batches(stop=lambda: (topic, 0) in loop.at_end)
        while not offsets:
            offsets += [m.offset() or 0 for m in next(batches)]
        loop.consumer.commit(offsets=[TopicPartition(topic, 0, offsets[-1] + 1)], asynchronous=False)
        # the caller is busy (no consume) until the poll interval has passed and the member has left
        deadline, admin = time.monotonic() + 120, AdminClient(services.kafka.librdkafka())
        while _members(admin, group) > 0:
            assert time.monotonic() < deadline, "the member never left its group"
        for records in batches:
            offsets += [m.offset() or 0 for m in records]
    assert offsets == list(range(30)), offsets
