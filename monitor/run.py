"""Run the delivery monitor in this process: discover its sources, serve its views, run the faust worker."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import faust
from prometheus_client import CollectorRegistry

from ketenstroom.adapters.kafka import all_partitions
from ketenstroom.adapters.observability import ObservabilityServer
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.errors import ConfigurationError, DeliveryError
from ketenstroom.settings import KafkaSettings, MonitorSettings, RegistrySettings
from monitor.app import Monitor, Sources

log = logging.getLogger("ketenstroom.monitor")

VIEWS = ("completeness", "silence", "dlq", "deliveries")


def discover(
    kafka: KafkaSettings, topics: Topics, schedules: Mapping[str, float | None], grace_days: float
) -> Sources:
    """Partition counts of the sources (the changelogs follow them). curated and ops.deliveries must
    exist (``ketenstroom topics`` creates them); a partner without a DLQ topic yet is left out."""
    counts: dict[str, int] = {}
    for topic in (topics.curated, topics.deliveries):
        try:
            counts[topic] = len(all_partitions(kafka, topic))
        except DeliveryError as exc:
            raise ConfigurationError(f"{exc}; create the topics first: `ketenstroom topics`") from exc
    dlq: dict[str, int] = {}
    for partner in schedules:
        try:
            dlq[partner] = len(all_partitions(kafka, topics.dlq(partner)))
        except DeliveryError:
            log.warning("%s does not exist yet; its dead letters are not watched", topics.dlq(partner))
    return Sources(
        schedules=dict(schedules),
        curated_partitions=counts[topics.curated],
        dlq_partitions=dlq,
        grace_days=grace_days,
    )


def run(
    *,
    kafka: KafkaSettings,
    registry: RegistrySettings,
    topics: Topics,
    settings: MonitorSettings,
    sources: Sources,
    changelog_config: Mapping[str, str],
) -> int:
    """Serve ``/metrics``, ``/health`` and ``/views/*`` and run the worker until SIGTERM or SIGINT
    (faust's worker stops its agents, flushes the changelogs and commits); the worker's exit code."""
    with Registry(registry) as schemas:
        monitor = Monitor(
            kafka=kafka,
            topics=topics,
            settings=settings,
            sources=sources,
            writer_schema=schemas.writer_schema,
            changelog_config=changelog_config,
        )
        metrics = CollectorRegistry()
        metrics.register(monitor.collector)
        server = ObservabilityServer(
            metrics,
            monitor.health,
            host=settings.metrics_host,
            port=settings.metrics_port,
            views={f"/views/{name}": monitor.view(name) for name in VIEWS},
        ).start()
        log.info(
            "monitor %s serving on %s:%d; watching %s, %s and %d DLQs",
            monitor.app.conf.id,
            settings.metrics_host,
            server.port,
            topics.deliveries,
            topics.curated,
            len(sources.dlq_partitions),
        )
        worker = faust.Worker(
            monitor.app, loglevel="warning", quiet=True, redirect_stdouts=False, override_logging=False
        )
        worker.spinner = None  # a terminal spinner: escape codes in a log file
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0
        finally:
            server.stop()
    return 0
