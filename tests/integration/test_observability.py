"""Observability on the real stack: the sink's Prometheus metrics after a real run (names, bounded
labels, values), its ``/metrics`` and ``/health`` on loopback, its log as one JSON object a line; and
each delivery's receipt as an event on ``ops.deliveries``."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient, ConfigResource
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ketenstroom.adapters.kafka import all_partitions, end_offsets, ensure_topics, read_to_end
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.contract.deliveries import DELIVERIES_RETENTION_DAYS, DeliveryEvent, FileDigest
from ketenstroom.contract.snapshots import staging_name
from ketenstroom.settings import SinkSettings
from producers.publish import Publisher
from sinks.metrics import SinkMetrics
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic.curated import chain_event, publish_curated
from tests.conftest import Services
from tests.integration.test_publish import EXPECTED_REJECTS, _export

AS_OF = datetime(2027, 6, 1, tzinfo=UTC)  # both months below are past their grace
#: the only label names a sink metric may carry: bounded, never an event id or pseudonym
BOUNDED = {"period_kind", "status", "partition", "le"}


def _publish(services: Services, names: Topics, moments: list[datetime]) -> list[str]:
    events = [
        chain_event(event_id=str(uuid.uuid4()), event_time=m, case=f"{n:064x}") for n, m in enumerate(moments)
    ]
    with Registry(services.registry) as registry:
        assert publish_curated(services.kafka, registry, names, events) == len(events)
    return [str(e["event_id"]) for e in events]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_sink_metrics_after_a_real_run(
    services: Services, names: Topics, group_id: str, tmp_path: Path
) -> None:
    ensure_topics(services.kafka, [names.curated], partitions=2, replication_factor=1)
    moments = [datetime(2026, 1, 10, tzinfo=UTC)] * 5 + [datetime(2026, 2, 10, tzinfo=UTC)] * 3
    ids = _publish(services, names, moments)
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    metrics = SinkMetrics()
    report = Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=group_id, max_buffered=3),
        topics=names,
        sealer=Sealer(
            store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: AS_OF)
        ),
        metrics=metrics,
    ).run(stop_at=end_offsets(services.kafka, [names.curated]))
    assert len(report.sealed) == 2

    text = generate_latest(metrics.registry).decode()
    samples = _samples(text)
    assert samples[("ketenstroom_sink_records_consumed_total", ())] == 8
    assert samples[("ketenstroom_sink_rows_staged_total", (("period_kind", "month"),))] == 8
    assert samples[("ketenstroom_sink_undecodable_records_total", ())] == 0
    sealed = (("period_kind", "month"), ("status", "provisional"))
    assert samples[("ketenstroom_sink_revisions_sealed_total", sealed)] == 2
    assert abs(samples[("ketenstroom_sink_last_seal_timestamp_seconds", sealed)] - time.time()) < 120
    assert samples[("ketenstroom_sink_snapshot_rows", (("period_kind", "month"),))] in (5, 3)
    assert samples[("ketenstroom_sink_flush_duration_seconds_count", ())] >= 3  # max_buffered=3
    assert samples[("ketenstroom_sink_seal_duration_seconds_count", ())] >= 1
    # caught up at the end: no lag in records on any partition it read, none in seconds
    lags = {
        labels: v for (name, labels), v in samples.items() if name == "ketenstroom_sink_consumer_lag_records"
    }
    assert lags and set(lags.values()) == {0}
    assert samples[("ketenstroom_sink_consumer_lag_seconds", ())] == 0
    # bounded labels only, and nothing of an event in the text
    for name, labels in samples:
        assert name.startswith("ketenstroom_sink_"), name
        assert {k for k, _ in labels} <= BOUNDED, (name, labels)
    assert not any(i in text for i in ids)


def test_sink_serves_metrics_and_health_on_loopback_and_logs_json(
    services: Services, names: Topics, group_id: str, tmp_path: Path
) -> None:
    ensure_topics(services.kafka, [names.curated], partitions=1, replication_factor=1)
    _publish(services, names, [datetime(2026, 1, 10, tzinfo=UTC)] * 4)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**services.env(names), "KETENSTROOM_SINK_METRICS_PORT": str(port)}
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "sink",
            "--storage",
            f"file://{tmp_path / 'store'}",
            "--group",
            group_id,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        consumed = 0.0
        while consumed < 4:
            assert sink.poll() is None and time.monotonic() < deadline, "the sink never consumed 4 records"
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                continue
            consumed = _samples(text).get(("ketenstroom_sink_records_consumed_total", ()), 0)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)  # consuming: healthy
        assert health.status_code == 200 and health.json() == {"status": "ok", "group_id": group_id}
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        if listening.returncode == 0:  # loopback only, by default
            local = {line.split()[3] for line in listening.stdout.splitlines()}
            assert local == {f"127.0.0.1:{port}"}, listening.stdout
    finally:
        sink.terminate()  # SIGTERM: stop at the next batch, flush, commit
        _stdout, stderr = sink.communicate(timeout=60)
    assert sink.returncode == 0, stderr[-2000:]
    # stderr is a pipe here: every log record one JSON object a line (the console's own notes, such as
    # a release not built, are not log records), none in the terminal's text format
    assert not re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ketenstroom", stderr, re.MULTILINE), (
        stderr
    )
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any(e["logger"].startswith("ketenstroom") and "joining group" in e["message"] for e in entries), (
        stderr
    )


def test_each_delivery_becomes_an_event_without_paths_or_rows(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "cli", "topics", "--partitions", "1", "--replication-factor", "1"],
        env=services.env(names),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    admin = AdminClient(services.kafka.librdkafka())
    resource = ConfigResource(ConfigResource.Type.TOPIC, names.deliveries)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert int(config["retention.ms"].value) == DELIVERIES_RETENTION_DAYS * 86_400_000

    export = _export(tmp_path)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        first = publisher.publish([export])
        second = publisher.publish([export])
    values = [
        m.value()
        for m in read_to_end(
            services.kafka, all_partitions(services.kafka, names.deliveries), group_id=f"{names.prefix}read"
        )
    ]
    events = [DeliveryEvent.decode(v) for v in values]
    assert [e.delivery_id for e in events] == [first.delivery_id, second.delivery_id]
    event = events[0]
    assert event.partner == "om" and event.outcome == "some-rejected" and event.reconciles
    assert (event.rows_read, event.published, event.rejected) == (
        first.rows_read,
        first.published,
        EXPECTED_REJECTS,
    )
    assert event.files == [
        FileDigest(sha256=hashlib.sha256(export.read_bytes()).hexdigest(), bytes=export.stat().st_size)
    ]
    assert event.schema_ids == first.schema_ids and event.schema_ids
    assert event.started <= event.finished
    for value in values:  # no path (a file name can name a person), no row value
        text = value.decode()
        assert str(tmp_path) not in text and "om.csv" not in text
        assert not any(v in text for v in ("123456782", "13-246712-26", "12345678", "1011 AB"))


def test_status_reports_deliveries_lag_dead_letters_and_overdue_seals(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    env = {**services.env(names), "KETENSTROOM_PROCESSOR_APP_ID": f"{names.prefix}processor"}

    def status(*args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--partner", "om", "--json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode in (0, 1), done.stdout + done.stderr[-2000:]
        return done.returncode, json.loads(done.stdout)

    made = subprocess.run(
        [sys.executable, "-m", "cli", "topics", "--partitions", "1", "--replication-factor", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    store = f"file://{tmp_path / 'store'}"
    code, report = status("--storage", store)
    assert code == 1 and report["partners"][0]["last_delivery"] is None  # om delivers daily: silent
    assert report["needs_action"] == ["om: silent past its 1-day schedule (never delivered)"]

    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        receipt = publisher.publish([_export(tmp_path)])
    code, report = status("--storage", store)
    (om,) = report["partners"]
    assert code == 0 and report["needs_action"] == [], report
    assert om["last_delivery"]["delivery_id"] == receipt.delivery_id
    assert om["last_delivery"]["outcome"] == "some-rejected"
    assert (om["silent"], om["dlq_open"]) == (False, 0)
    assert om["raw_lag_records"] == receipt.published  # nothing processed yet
    assert report["periods"] == [] and report["next_seal_due"] is None

    # two days on, om is silent; a period with staged files long past its grace is overdue
    ObjectStore(store).put(staging_name("2026MM01", 0, 0), b"not read by status")
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    code, report = status("--storage", store, "--now", later)
    assert code == 1
    (period,) = report["periods"]
    assert (period["period"], period["state"], period["staged_files"], period["seal_overdue"]) == (
        "2026MM01",
        "staged",
        1,
        True,
    )
    assert [line.split(":")[0] for line in report["needs_action"]] == ["om", "2026MM01"]
    assert report["partners"][0]["silent"] is True
