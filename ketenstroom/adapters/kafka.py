"""Kafka adapter: topic creation and watermarks, with errors translated to ours."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from ketenstroom.errors import DeliveryError
from ketenstroom.settings import KafkaSettings


def ensure_topics(
    settings: KafkaSettings,
    names: Iterable[str],
    *,
    partitions: int = 3,
    replication_factor: int = -1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient(settings.librdkafka())
    wanted = [
        NewTopic(n, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
        for n in names
    ]
    if not wanted:
        return
    futures = admin.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise DeliveryError(
                f"cannot create topic {name!r} on {settings.bootstrap_servers}: {err}"
            ) from exc


def end_offsets(
    settings: KafkaSettings, topics: Iterable[str], *, group_id: str | None = None, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermark of every partition of ``topics``: where a reader that wants 'all so far' must reach.

    With ``group_id``, partitions the group has already committed up to the end are left out, so a
    "run until caught up" reader does not wait for records that will never come.
    """
    consumer = Consumer(
        settings.librdkafka(group_id=group_id or "ketenstroom-watermarks", enable_auto_commit=False)
    )
    try:
        out: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=timeout)
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                out[(topic, partition)] = high
        if group_id is not None and out:
            committed = consumer.committed([TopicPartition(t, p) for t, p in out], timeout=timeout)
            for tp in committed:
                if tp.offset >= 0 and tp.offset >= out[(tp.topic, tp.partition)]:
                    del out[(tp.topic, tp.partition)]
        return out
    except KafkaException as exc:
        raise DeliveryError(f"cannot read watermarks from {settings.bootstrap_servers}: {exc}") from exc
    finally:
        consumer.close()


def high_watermarks(
    settings: KafkaSettings, partitions: Iterable[TopicPartition], *, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermark of each partition, in one ListOffsets request per broker (not one per partition).

    A partition whose offset cannot be listed (no leader yet, just created) is left out of the answer:
    callers treat it as unknown rather than wait for it.
    """
    wanted = {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in partitions}
    if not wanted:
        return {}
    admin = AdminClient(settings.librdkafka())
    out: dict[tuple[str, int], int] = {}
    for tp, future in admin.list_offsets(wanted, request_timeout=timeout).items():
        try:
            out[(tp.topic, tp.partition)] = future.result(timeout=timeout).offset
        except KafkaException:
            continue
    return out


def read_to_end(
    settings: KafkaSettings, partitions: list[TopicPartition], *, group_id: str, deadline_s: float = 120.0
) -> Iterator[Message]:
    """Committed records of ``partitions`` from the given offsets up to the end as of reading.

    Uses partition-EOF events rather than comparing offsets: a read_committed consumer never returns
    transaction markers or aborted records, so its last offset can stay short of the high watermark.
    """
    consumer = Consumer(
        settings.librdkafka(
            group_id=group_id,
            enable_auto_commit=False,
            enable_partition_eof=True,
            isolation_level="read_committed",
        )
    )
    pending = {(tp.topic, tp.partition) for tp in partitions}
    deadline = time.monotonic() + deadline_s
    try:
        consumer.assign(partitions)
        while pending:
            if time.monotonic() > deadline:
                raise DeliveryError(
                    f"reading {sorted(pending)} did not reach the end within {deadline_s:.0f} s"
                )
            for msg in consumer.consume(10_000, timeout=0.1):  # returns early only when 10 000 came
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                else:
                    raise DeliveryError(f"reading {msg.topic()} failed: {err}")
    finally:
        consumer.close()


def all_partitions(
    settings: KafkaSettings, topic: str, offset: int = OFFSET_BEGINNING, timeout: float = 10.0
) -> list[TopicPartition]:
    admin = AdminClient(settings.librdkafka())
    meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise DeliveryError(f"topic {topic} does not exist on {settings.bootstrap_servers}")
    return [TopicPartition(topic, p, offset) for p in sorted(meta.partitions)]
