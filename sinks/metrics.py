"""The sink's Prometheus metrics (prefix ``ketenstroom_sink_``), counted per batch, never per record.

Labels stay bounded: the period kind (month, quarter, year), a seal's status, a partition number. Never
an event id, a pseudonym or a period's rows.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("ketenstroom_sink_records_consumed", "Curated records consumed", registry=r)
        self.retries = Counter(
            "ketenstroom_sink_transient_retries",
            "Operations tried again after a transient failure (object store, registry)",
            registry=r,
        )
        self.commits_refused = Counter(
            "ketenstroom_sink_commits_refused",
            "Offset commits refused because the group had moved on (rebalance, session expired); the "
            "records since the last commit are read again, and sealing keeps each event once",
            registry=r,
        )
        self.undecodable = Counter(
            "ketenstroom_sink_undecodable_records",
            "Curated records kept under rejects/ because they could not be decoded",
            registry=r,
        )
        self.staged_rows = Counter(
            "ketenstroom_sink_rows_staged",
            "Rows written to staged Parquet files",
            ["period_kind"],
            registry=r,
        )
        self.flush_duration = Histogram(
            "ketenstroom_sink_flush_duration_seconds",
            "Writing the buffered rows to staged files",
            registry=r,
            buckets=_DURATIONS,
        )
        self.seal_duration = Histogram(
            "ketenstroom_sink_seal_duration_seconds",
            "Sealing every due period and deriving its tables",
            registry=r,
            buckets=_DURATIONS,
        )
        self.sealed = Counter(
            "ketenstroom_sink_revisions_sealed",
            "Revisions sealed, by status (open, revised, final)",
            ["period_kind", "status"],
            registry=r,
        )
        self.last_seal = Gauge(
            "ketenstroom_sink_last_seal_timestamp_seconds",
            "When the sink last sealed a revision (unix seconds), by its status",
            ["period_kind", "status"],
            registry=r,
        )
        self.snapshot_rows = Gauge(
            "ketenstroom_sink_snapshot_rows",
            "Rows in the revision sealed last",
            ["period_kind"],
            registry=r,
        )
        self.lag = Gauge(
            "ketenstroom_sink_consumer_lag_records",
            "High watermark minus position of the curated topic",
            ["partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "ketenstroom_sink_consumer_lag_seconds",
            "Now minus the Kafka timestamp of the newest record consumed (0 when caught up)",
            registry=r,
        )
