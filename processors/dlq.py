"""Dead letters: list them by reason, and replay them into ``raw.<partner>`` after a fix.

Replay copies the original key, bytes and headers back to the raw topic with a header naming where
the copy came from. Replaying twice is harmless: the processor drops event ids it has seen. Progress
is kept per reason filter in a consumer group, so a replay continues where the last one stopped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from ketenstroom.adapters.kafka import all_partitions, read_to_end
from ketenstroom.contract import Topics
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import KafkaSettings

REPLAY_HEADER = "ketenstroom.replay-of"


@dataclass
class DeadLetterSummary:
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)  # reason -> one example error text


def _headers(msg: Message) -> dict[str, str]:
    raw = msg.headers() or []
    return {k: (v or b"").decode(errors="replace") for k, v in raw}


def _start_offsets(kafka: KafkaSettings, topic: str, group: str) -> list[TopicPartition]:
    """The group's committed offsets on ``topic``, or the beginning where it has none."""
    partitions = all_partitions(kafka, topic)
    consumer = Consumer(kafka.librdkafka(group_id=group, enable_auto_commit=False))
    try:
        committed = consumer.committed(partitions, timeout=10)
    finally:
        consumer.close()
    return [
        TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
        for tp in committed
    ]


def summarise(kafka: KafkaSettings, topics: Topics, partner: str) -> DeadLetterSummary:
    """Read the whole DLQ (no offsets committed) and count by reason and stage."""
    topic = topics.dlq(partner)
    summary = DeadLetterSummary()
    try:
        for msg in read_to_end(kafka, all_partitions(kafka, topic), group_id=f"{topic}.list"):
            headers = _headers(msg)
            reason = headers.get("ketenstroom.reason", "unknown")
            summary.total += 1
            summary.by_reason[reason] += 1
            summary.by_stage[headers.get("ketenstroom.stage", "unknown")] += 1
            summary.errors.setdefault(reason, headers.get("ketenstroom.error", ""))
    except KafkaException as exc:
        raise DeliveryError(f"reading {topic} failed: {exc}") from exc
    return summary


def replay(
    kafka: KafkaSettings, topics: Topics, partner: str, *, reason: str | None = None
) -> dict[str, int]:
    """Copy dead letters (optionally of one reason) back to ``raw.<partner>``; offsets committed after."""
    source, target = topics.dlq(partner), topics.raw(partner)
    group = f"{source}.replay.{reason or 'all'}"
    consumer = Consumer(kafka.librdkafka(group_id=group, enable_auto_commit=False))
    producer = Producer(kafka.librdkafka(enable_idempotence=True, acks="all"))
    counts = {"read": 0, "replayed": 0, "skipped": 0}
    failures: list[str] = []
    try:
        messages = list(read_to_end(kafka, _start_offsets(kafka, source, group), group_id=f"{group}.read"))
        for msg in messages:
            counts["read"] += 1
            headers = _headers(msg)
            if reason is not None and headers.get("ketenstroom.reason") != reason:
                counts["skipped"] += 1
                continue
            origin = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
            passed_on = [(k, v) for k, v in (msg.headers() or []) if not k.startswith("ketenstroom.")]
            producer.produce(
                target,
                key=msg.key(),
                value=msg.value(),
                headers=[*passed_on, (REPLAY_HEADER, origin.encode())],
                on_delivery=lambda err, _m: err is not None and failures.append(str(err)),
            )
            counts["replayed"] += 1
            producer.poll(0)
        producer.flush(60)
        if failures:
            raise DeliveryError(f"{len(failures)} dead letters could not be replayed: {failures[0]}")
        if messages:  # only after every copy is acknowledged
            consumer.commit(
                offsets=[
                    TopicPartition(m.topic(), m.partition(), m.offset() + 1)
                    for m in _last_per_partition(messages)
                ],
                asynchronous=False,
            )
    except KafkaException as exc:
        raise DeliveryError(f"replaying {source} failed: {exc}") from exc
    finally:
        consumer.close()
    return counts


def _last_per_partition(messages: list[Message]) -> list[Message]:
    last: dict[int, Message] = {}
    for msg in messages:
        last[msg.partition()] = msg
    return list(last.values())
