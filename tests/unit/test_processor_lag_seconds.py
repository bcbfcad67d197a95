"""The processor's lag in seconds: how old the records waiting on ``raw.<partner>`` are at most
(now minus the Kafka time of the newest record it processed on a partition that is behind), 0 when
caught up; what the raw-retention alert compares with the topic's retention. A stub consumer, no
broker."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from ketenstroom.contract import Topics
from processors.metrics import ProcessorMetrics
from processors.progress import Reconciliation
from processors.runner import TransactionalProcessor


def _processor(high: dict[tuple[str, int], int], position: dict[tuple[str, int], int]) -> Any:
    proc: Any = object.__new__(TransactionalProcessor)  # no Kafka clients: only what _update_lag reads
    consumer = SimpleNamespace(get_watermark_offsets=lambda tp, cached: (0, high[(tp.topic, tp.partition)]))
    proc.loop = SimpleNamespace(assignment=lambda: [TopicPartition(t, p) for t, p in high], consumer=consumer)
    proc.topics = Topics()
    proc.metrics = ProcessorMetrics(CollectorRegistry())
    proc.stats = Reconciliation()
    proc.stats.position.update(position)
    proc._last_ts = {}
    proc._lag_at = 0.0
    proc._dedup = {}  # no dedup state: _update_lag also reports its size
    return proc


def _seconds(proc: Any, partner: str) -> float:
    value = proc.metrics.registry.get_sample_value(
        "ketenstroom_processor_consumer_lag_seconds", {"partner": partner}
    )
    assert value is not None
    return float(value)


def test_lag_seconds_is_the_age_of_the_newest_processed_record_where_records_wait() -> None:
    now_ms = int(time.time() * 1000)
    proc = _processor(
        high={("raw.om", 0): 100, ("raw.om", 1): 50, ("raw.cjib", 0): 10},
        position={("raw.om", 0): 40, ("raw.om", 1): 50, ("raw.cjib", 0): 10},
    )
    proc._last_ts = {
        ("raw.om", 0): now_ms - 3_600_000,  # behind: 60 records wait behind one an hour old
        ("raw.om", 1): now_ms - 7_200_000,  # caught up: its age says nothing
        ("raw.cjib", 0): now_ms - 86_400_000,  # caught up
    }
    proc._update_lag()
    assert 3590 <= _seconds(proc, "om") <= 3660  # the partition behind decides, not the older caught-up one
    assert _seconds(proc, "cjib") == 0.0
    assert (
        proc.metrics.registry.get_sample_value(
            "ketenstroom_processor_consumer_lag", {"partner": "om", "partition": "0"}
        )
        == 60
    )


def test_caught_up_again_the_lag_returns_to_zero() -> None:
    now_ms = int(time.time() * 1000)
    proc = _processor(high={("raw.om", 0): 100}, position={("raw.om", 0): 40})
    proc._last_ts = {("raw.om", 0): now_ms - 600_000}
    proc._update_lag()
    assert _seconds(proc, "om") >= 599
    proc.stats.position[("raw.om", 0)] = 100
    proc._update_lag()
    assert _seconds(proc, "om") == 0.0
