"""``ConsumeLoop(return_at_eof=True)`` hands the last records of a partition over with its EOF, instead
of holding them until the poll timeout has passed (librdkafka's ``consume`` waits for a full batch)."""

from __future__ import annotations

import time

from confluent_kafka import Producer

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
