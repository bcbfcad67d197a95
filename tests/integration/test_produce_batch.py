"""The processor sends a batch's curated events with one ``produce_batch`` call: each event must land
in the partition ``produce`` would have chosen for its key (the curated topic is keyed by case, so a
case's events stay in one partition, in order), in the order given. Real broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from ketenstroom.adapters.kafka import all_partitions, ensure_topics, read_to_end
from ketenstroom.contract import Topics
from tests.conftest import Services

pytestmark = pytest.mark.integration


def test_produce_batch_partitions_and_orders_as_produce_does(services: Services, names: Topics) -> None:
    one, batched = f"{names.prefix}one", f"{names.prefix}batched"
    ensure_topics(services.kafka, [one, batched], partitions=3, replication_factor=1)
    producer = Producer(
        services.kafka.librdkafka(enable_idempotence=True, acks="all", linger_ms=5, compression_type="lz4")
    )
    events = [(f"case-{i % 700}".encode(), f"event-{i}".encode()) for i in range(3000)]
    for key, value in events:
        producer.produce(one, key=key, value=value)
    assert producer.produce_batch(batched, [{"key": k, "value": v} for k, v in events]) == len(events)
    assert producer.flush(30) == 0

    def layout(topic: str) -> dict[int, list[tuple[bytes | None, bytes | None]]]:
        out: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        for msg in read_to_end(services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.r"):
            out.setdefault(msg.partition() or 0, []).append((msg.key(), msg.value()))
        return out

    expected, got = layout(one), layout(batched)
    assert len(expected) == 3  # the keys spread over every partition: the comparison means something
    assert got == expected
