"""The processor's Prometheus metrics (prefix ``ketenstroom_processor_``), per partner."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter(
            "ketenstroom_processor_records_in", "Raw records consumed", ["partner"], registry=r
        )
        self.curated = Counter(
            "ketenstroom_processor_curated", "ChainEvents produced", ["partner"], registry=r
        )
        self.dead = Counter(
            "ketenstroom_processor_dead_lettered",
            "Records sent to the DLQ",
            ["partner", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "ketenstroom_processor_duplicates",
            "Records with an event id seen before",
            ["partner"],
            registry=r,
        )
        self.latency = Histogram(
            "ketenstroom_processor_latency_seconds",
            "From the raw record's Kafka timestamp to its outcome being sent",
            ["partner"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.lag = Gauge(
            "ketenstroom_processor_consumer_lag",
            "High watermark minus position",
            ["partner", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "ketenstroom_processor_consumer_lag_seconds",
            "Now minus the Kafka timestamp of the newest record processed, on partitions behind "
            "(0 when caught up): how old unprocessed raw records are, against the raw topic's retention",
            ["partner"],
            registry=r,
        )
        self.last_event_time = Gauge(
            "ketenstroom_processor_last_event_time_seconds",
            "Event time of the newest curated event (unix seconds)",
            ["partner"],
            registry=r,
        )
        self.dedup_ids = Gauge(
            "ketenstroom_processor_dedup_ids",
            "Event ids held for dedup (within the horizon), per raw partition",
            ["partner", "partition"],
            registry=r,
        )
        self.dedup_bytes = Gauge(
            "ketenstroom_processor_dedup_bytes",
            "Memory the dedup state holds (arrays, Bloom filter, ids not folded yet), per raw partition",
            ["partner", "partition"],
            registry=r,
        )
        self.dedup_restore_seconds = Gauge(
            "ketenstroom_processor_dedup_restore_seconds",
            "How long the last restore of dedup state from its changelog took",
            registry=r,
        )
        self.transactions = Counter(
            "ketenstroom_processor_transactions",
            "Transactions ended, by outcome (committed, aborted)",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "ketenstroom_processor_transient_retries",
            "Batches tried again after a transient failure (registry, broker); never dead-lettered",
            registry=r,
        )
        for outcome in ("committed", "aborted"):  # present from the start, so rate() sees the first one
            self.transactions.labels(outcome)
