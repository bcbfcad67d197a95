"""``end_offsets(group_id=...)`` answers while a killed transactional processor's offsets are pending.

A read_committed client asks the broker for stable offsets only, and gets "unstable offset commit"
for as long as a transaction that sent offsets for the group is open: after SIGKILL, until the
successor fences it or the transaction times out. ``process --until-caught-up`` reads its stop
offsets before it fences its predecessor, so that lookup failed the restart (CI, 2026-11-29).
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.contract import Topics
from tests.conftest import Services


def test_stop_offsets_are_read_while_a_transaction_holds_offsets_open(
    services: Services, names: Topics
) -> None:
    topic, group = names.raw("om"), f"{names.prefix}proc"
    ensure_topics(services.kafka, [topic], partitions=1, replication_factor=1)
    plain = Producer(services.kafka.librdkafka())
    for n in range(10):
        plain.produce(topic, value=f"record {n}".encode(), partition=0)
    assert plain.flush(30) == 0
    consumer = Consumer(services.kafka.librdkafka(group_id=group, enable_auto_commit=False))
    consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)  # processed 0-3 before

    # the "killed" instance: offsets 4-9 sent in a transaction that is never ended
    zombie = Producer(services.kafka.librdkafka(transactional_id=f"{group}-0", transaction_timeout_ms=60_000))
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.send_offsets_to_transaction([TopicPartition(topic, 0, 10)], consumer.consumer_group_metadata(), 30)
    try:
        started = time.monotonic()
        stop_at = end_offsets(services.kafka, [topic], group_id=group, timeout=10)
        took = time.monotonic() - started
        # the pending offsets are not counted as committed: the partition is still to be read to 10
        assert stop_at == {(topic, 0): 10}
        assert took < 5, f"waited {took:.1f} s for a transaction that nobody will end"
    finally:
        zombie.abort_transaction(30)
        consumer.close()
