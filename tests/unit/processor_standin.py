"""A ``TransactionalProcessor`` without Kafka clients: just what ``_transact`` uses, for unit tests."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from ketenstroom.contract import Topics
from processors.metrics import ProcessorMetrics
from processors.progress import Reconciliation
from processors.runner import TransactionalProcessor
from processors.transform import Curated, DeadLetter, RawRecord


def processor_standin(
    producer: Any,
    *,
    transform: Callable[[RawRecord], Curated | DeadLetter],
    new_state: Callable[[], Any],
    rewind: Callable[[list[TopicPartition]], None] = lambda _offsets: None,
    txn_call_s: float = 30.0,
) -> Any:
    """``producer`` stands in for the transactional producer; each newly assigned partition gets a
    dedup state from ``new_state``; ``rewind`` sees the offsets an aborted batch goes back to."""
    proc: Any = object.__new__(TransactionalProcessor)
    proc.producer = producer
    proc.loop = SimpleNamespace(consumer=SimpleNamespace(consumer_group_metadata=object), rewind=rewind)
    proc.topics = Topics()
    proc.app_id = "ketenstroom-processor"
    proc.metrics = ProcessorMetrics(CollectorRegistry())
    proc.stats = Reconciliation()
    proc._dedup = {}
    proc._partners_by_topic = {}
    proc._last_ts = {}
    proc.transformer = SimpleNamespace(transform=transform)
    proc.txn_call_s = txn_call_s
    proc._restore = lambda tps: proc._dedup.update({(tp.topic, tp.partition): new_state() for tp in tps})
    return proc
