"""The delivery monitor (``ketenstroom monitor``, a faust app) on the real stack, as its own process.

One generated OM export goes through publish -> process -> sink (sealed snapshot) once for the module;
each test then runs its own monitor (its own app id: consumer group and changelogs) over it:
completeness figures equal counts taken independently from the sealed Parquet; SIGKILL and restart
gives the same tables back from the changelogs; SIGTERM and Ctrl-C stop it with exit 0, offsets and
changelogs committed, and a restart counts every record exactly once. A last test stages silence and
a DLQ burst in a namespace of its own, and reads them through ``ketenstroom status --json`` too.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from ketenstroom.adapters.kafka import all_partitions, end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_code
from ketenstroom.contract import Topics
from ketenstroom.contract.deliveries import DeliveryEvent
from ketenstroom.settings import SinkSettings
from producers.publish import Publisher, Receipt
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic import OM_COLUMNS, om_decision_rows, write_csv
from synthetic.curated import chain_event, publish_curated
from tests.conftest import Services

KEY = "monitor-test-key-0123456789abcdef0123"  # pragma: allowlist secret
FAR = datetime(2030, 1, 1, tzinfo=UTC)  # every 2026 period past its grace: all sealed
#: fields of the views that depend on the moment they are computed, not on the tables
MOMENT = {"now", "last_hour", "baseline_per_hour", "spike", "oldest_age_seconds"}


@dataclass
class Pipeline:
    names: Topics
    receipt: Receipt
    curated: int
    dead: int
    store: ObjectStore


def _env(services: Services, names: Topics, **extra: str) -> dict[str, str]:
    return {
        **services.env(names),
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "test-k1",
        "KETENSTROOM_LOG_FORMAT": "json",
        **extra,
    }


@pytest.fixture(scope="module")
def pipeline(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """A generated OM export published, processed (some rows dead-lettered) and sealed, once."""
    names = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    tmp = tmp_path_factory.mktemp("monitor")
    made = subprocess.run(
        [sys.executable, "-m", "cli", "topics", "--partitions", "2", "--replication-factor", "1"],
        env=_env(services, names),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    export = tmp / "om.csv"
    write_csv(export, om_decision_rows(300, seed=5, noise=0.08), OM_COLUMNS)
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        receipt = publisher.publish([export])
    processed = subprocess.run(
        [sys.executable, "-m", "cli", "process", "--partner", "om", "--until-caught-up"],
        env=_env(services, names, KETENSTROOM_PROCESSOR_APP_ID=f"{names.prefix}processor"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert processed.returncode == 0, processed.stderr[-3000:]
    counts = json.loads(processed.stdout.strip().splitlines()[-1])
    dead = sum(counts["dead_lettered"].get("om", {}).values())
    assert dead > 0, "the noisy export must leave dead letters to count"
    store = ObjectStore(f"file://{tmp / 'store'}")
    Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=f"{names.prefix}sink"),
        topics=names,
        sealer=Sealer(
            store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: FAR)
        ),
    ).run(stop_at=end_offsets(services.kafka, [names.curated]))
    return Pipeline(names, receipt, counts["curated"]["om"], dead, store)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Running:
    """``ketenstroom monitor`` as a child process, with its views over HTTP."""

    def __init__(self, services: Services, names: Topics, app_id: str, log: Path) -> None:
        self.port, self.log = _free_port(), log
        self.group = f"{names.prefix}{app_id}"  # the faust app id: the topic prefix goes in front
        self.env = _env(
            services,
            names,
            KETENSTROOM_MONITOR_METRICS_PORT=str(self.port),
            KETENSTROOM_MONITOR_APP_ID=app_id,
            KETENSTROOM_MONITOR_REFRESH_S="0.5",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Running:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "monitor"], env=self.env, stdout=log, stderr=log
            )
        return self

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=3)
        except httpx.TransportError:
            return None

    def view(self, name: str) -> dict[str, Any] | None:
        found = self.get(f"/views/{name}")
        if found is None or found.status_code != 200 or "status" in found.json():
            return None
        return found.json()  # type: ignore[no-any-return]

    def wait(self, what: str, condition: Callable[[], bool], seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert self.proc is not None and self.proc.poll() is None, (
                f"the monitor exited ({self.proc and self.proc.returncode}) before {what}: "
                + self.log.read_text()[-3000:]
            )
            assert time.monotonic() < deadline, (
                f"{what} not within {seconds} s ({condition}): {self.log.read_text()[-3000:]}"
            )
            time.sleep(0.2)

    def healthy(self) -> bool:
        found = self.get("/health")
        return found is not None and found.status_code == 200

    def stop(self, sig: int, seconds: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=seconds)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def monitors(services: Services, tmp_path: Path) -> Iterator[Callable[[Topics, str], Running]]:
    started: list[Running] = []

    def make(names: Topics, app_id: str) -> Running:
        running = Running(services, names, app_id, tmp_path / f"{app_id}.log")
        started.append(running)
        return running

    yield make
    for running in started:
        running.kill()


def _tables(monitor: Running) -> dict[str, Any]:
    """The views without what depends on the moment they were computed: the tables' contents."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in MOMENT}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    views = {name: monitor.view(name) for name in ("completeness", "deliveries", "dlq", "silence")}
    assert all(v is not None for v in views.values()), views
    return strip(views)  # type: ignore[no-any-return]


class Counted:
    """A condition: the monitor's totals are these (the last totals seen are kept for the message)."""

    def __init__(self, monitor: Running, curated: int, dead: int, deliveries: int = 1) -> None:
        self.monitor, self.wanted = monitor, (curated, dead, deliveries)
        self.seen: tuple[int, int, int] | None = None

    def __call__(self) -> bool:
        monitor = self.monitor
        completeness, dlq, delivered = (monitor.view(n) for n in ("completeness", "dlq", "deliveries"))
        if completeness is None or dlq is None or delivered is None:
            return False
        om_dead = next(r["records_total"] for r in dlq["partners"] if r["partner"] == "om")
        om_deliveries = next(r["deliveries_total"] for r in delivered["partners"] if r["partner"] == "om")
        events = sum(r["events"] for r in completeness["periods"])
        self.seen = (events, om_dead, om_deliveries)
        return self.seen == self.wanted

    def __str__(self) -> str:
        return f"(curated, dead letters, deliveries) = {self.wanted}; last seen {self.seen}"


def _snapshot_counts(store: ObjectStore) -> Counter[tuple[str, str, str]]:
    """(partner, period, event type) -> rows, from the latest sealed revision of every period."""
    snapshots = Snapshots(store)
    counts: Counter[tuple[str, str, str]] = Counter()
    for period in snapshots.periods():
        manifest = snapshots.manifest(period)
        assert manifest is not None and manifest.status in ("provisional", "final"), period
        for entry in manifest.files:
            table = pq.read_table(
                io.BytesIO(store.get(entry.path)), columns=["period", "source_partner", "source_event_type"]
            )
            for row in table.to_pylist():
                counts[(row["source_partner"], row["period"], row["source_event_type"])] += 1
    return counts


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_completeness_equals_counts_from_the_sealed_snapshot(
    services: Services, pipeline: Pipeline, monitors: Callable[[Topics, str], Running]
) -> None:
    monitor = monitors(pipeline.names, "mon-a").start()
    monitor.wait("every record counted", Counted(monitor, pipeline.curated, pipeline.dead))
    snapshot = _snapshot_counts(pipeline.store)
    assert sum(snapshot.values()) == pipeline.curated
    view = monitor.view("completeness")
    assert view is not None
    seen = {
        (r["partner"], r["period"], event_type): n
        for r in view["periods"]
        for event_type, n in r["by_event_type"].items()
    }
    assert seen == dict(snapshot)
    assert len({period for _p, period, _t in seen}) >= 4, "the export spans several months"

    # the reference, computed here from the snapshot: the same month a year earlier, else the median
    # of the (at most six) latest earlier months with events
    totals: Counter[str] = Counter()
    for (_partner, period, _type), n in snapshot.items():
        totals[period] += n
    for row in view["periods"]:
        year_before = f"{int(row['period'][:4]) - 1}{row['period'][4:]}"
        earlier = sorted(p for p in totals if p < row["period"])[-6:]
        if totals.get(year_before):
            reference: float | None = totals[year_before]
        else:
            reference = statistics.median(totals[p] for p in earlier) if earlier else None
        assert row["reference"] == reference, row
        assert row["ratio"] == (
            None if reference is None else pytest.approx(totals[row["period"]] / reference)
        )

    # the same figures on /metrics, for the three latest periods only (bounded labels)
    metrics = monitor.get("/metrics")
    assert metrics is not None
    samples = _samples(metrics.text)
    latest = sorted(totals)[-3:]
    shown = {
        dict(labels)["period"]: value
        for (name, labels), value in samples.items()
        if name == "ketenstroom_monitor_period_events"
    }
    assert shown == {p: totals[p] for p in latest}
    assert samples[("ketenstroom_monitor_events_total", (("source", "curated"),))] == pipeline.curated
    assert samples[("ketenstroom_monitor_events_total", (("source", "dlq"),))] == pipeline.dead
    rows = {dict(labels)["outcome"]: v for (n, labels), v in samples.items() if n.endswith("delivery_rows_total") and ("partner", "om") in labels}  # fmt: skip
    assert rows == {"accepted": pipeline.receipt.published, "rejected": pipeline.receipt.rejected_total}
    assert monitor.stop(signal.SIGTERM) == 0
    # the worker's log (faust's and aiokafka's included): one JSON object a line, nothing shaped like a
    # pseudonym or an event id
    log = monitor.log.read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines), log[-2000:]
    assert not re.search(r"[0-9a-f]{64}|[0-9a-f]{8}-[0-9a-f]{4}-", log), log[-2000:]


def test_sigkill_and_restart_recover_the_same_tables_from_the_changelogs(
    services: Services, pipeline: Pipeline, monitors: Callable[[Topics, str], Running]
) -> None:
    monitor = monitors(pipeline.names, "mon-b").start()
    monitor.wait("every record counted", Counted(monitor, pipeline.curated, pipeline.dead))
    before = _tables(monitor)
    monitor.kill()  # SIGKILL: no flush, no commit, no goodbye
    assert monitor.proc is not None and monitor.proc.returncode == -signal.SIGKILL

    monitor.start()
    monitor.wait("healthy again", monitor.healthy)
    # healthy means recovered: the first views after the restart are the tables as they were, from the
    # changelogs (records read again past the last committed offsets are skipped, not counted twice)
    assert _tables(monitor) == before
    assert monitor.log.read_text().count("tables recovered from their changelogs") == 2

    # killed again while dead letters pour in: whatever was counted but not yet committed is
    # delivered again after the restart, and must not be counted twice
    before_kill = pipeline.dead
    _dead_letters(services, pipeline, 400)
    probe = Counted(monitor, pipeline.curated, before_kill)
    monitor.wait(
        "counting under way", lambda: not probe() and probe.seen is not None and probe.seen[1] > before_kill
    )
    monitor.kill()
    monitor.start()
    monitor.wait("every dead letter counted", Counted(monitor, pipeline.curated, pipeline.dead))
    # then one more on every partition: each is read after all that came before it on its partition,
    # redelivered ones included, so once these are in the count is final (faust may not commit offsets
    # it processed around the rebalance after a crash: a later start reads them again, and skips them)
    _dead_letters(services, pipeline, 0, per_partition=True)
    counted = Counted(monitor, pipeline.curated, pipeline.dead)
    monitor.wait("the last dead letter on every partition counted", counted)
    assert monitor.stop(signal.SIGTERM) == 0


def _dead_letters(services: Services, pipeline: Pipeline, n: int, *, per_partition: bool = False) -> None:
    """``n`` more dead letters for om, or one on each partition (the module's pipeline keeps the count
    for the next test)."""
    producer = Producer(services.kafka.librdkafka())
    topic = pipeline.names.dlq("om")
    partitions = [tp.partition for tp in all_partitions(services.kafka, topic)] if per_partition else []
    headers: list[tuple[str, str | bytes | None]] = [("ketenstroom.reason", b"schema")]
    for i in range(n):
        producer.produce(topic, key=f"late-{i}".encode(), value=b"\x00broken", headers=headers)
    for partition in partitions:
        producer.produce(topic, key=b"last", value=b"\x00broken", headers=headers, partition=partition)
    assert producer.flush(30) == 0
    pipeline.dead += n + len(partitions)


def test_sigterm_and_ctrl_c_stop_cleanly_and_a_restart_counts_exactly_once(
    services: Services, pipeline: Pipeline, monitors: Callable[[Topics, str], Running]
) -> None:
    names = pipeline.names
    monitor = monitors(names, "mon-c").start()
    monitor.wait("every record counted", Counted(monitor, pipeline.curated, pipeline.dead))
    for sig in (signal.SIGTERM, signal.SIGINT):
        # records arrive while the monitor is being stopped: it finishes what it took, commits what it
        # counted, and leaves the rest for the next start
        _dead_letters(services, pipeline, 300)
        began = time.monotonic()
        assert monitor.stop(sig) == 0, monitor.log.read_text()[-3000:]
        assert time.monotonic() - began < 30
        stopped = monitor.view("dlq")
        assert stopped is None  # gone, not hanging
        monitor.start()
        monitor.wait("healthy again", monitor.healthy)
        monitor.wait("the rest counted", Counted(monitor, pipeline.curated, pipeline.dead))
        # nothing counted twice: one more dead letter on every partition comes after every record
        # that could still be read again (faust commits lazily), and the totals are exact once it is in
        _dead_letters(services, pipeline, 0, per_partition=True)
        monitor.wait("exactly once", Counted(monitor, pipeline.curated, pipeline.dead))
    settled = _tables(monitor)
    assert monitor.stop(signal.SIGINT) == 0
    monitor.start()
    monitor.wait("healthy again", monitor.healthy)
    assert _tables(monitor) == settled
    assert monitor.stop(signal.SIGTERM) == 0


def test_silence_and_a_dlq_burst_show_in_metrics_views_and_status(
    services: Services, names: Topics, monitors: Callable[[Topics, str], Running], tmp_path: Path
) -> None:
    ensure_topics(
        services.kafka,
        [names.curated, names.deliveries, names.dlq("om"), names.dlq("politie")],
        partitions=1,
        replication_factor=1,
    )
    now = datetime.now(UTC)
    producer = Producer(services.kafka.librdkafka())

    def delivered(partner: str, finished: datetime) -> None:
        event = DeliveryEvent(
            partner=partner,
            delivery_id=str(uuid.uuid4()),
            started=finished - timedelta(minutes=1),
            finished=finished,
            files=[],
            rows_read=10,
            published=10,
            rejected={},
            not_delivered=0,
            delivery_errors={},
            schema_ids={},
            outcome="delivered",
            reconciles=True,
        )
        producer.produce(names.deliveries, key=partner.encode(), value=event.encode())

    delivered("politie", now - timedelta(days=3))  # a daily schedule, three days quiet: silent
    delivered("om", now - timedelta(days=3))
    delivered("om", now - timedelta(hours=2))  # om delivered today: not silent
    # om: a dead letter or two every hour for a day, and two now (no spike); politie: 40 now (a spike)
    for hours in range(1, 25):
        moment = int((now - timedelta(hours=hours)).timestamp() * 1000)
        producer.produce(names.dlq("om"), value=b"x", timestamp=moment)
    for _ in range(2):
        producer.produce(names.dlq("om"), value=b"x")
    for _ in range(40):
        producer.produce(names.dlq("politie"), value=b"x")
    assert producer.flush(30) == 0
    events = [
        chain_event(event_id=str(uuid.uuid4()), event_time=now - timedelta(minutes=5)) for _ in range(4)
    ]
    with Registry(services.registry) as registry:
        assert publish_curated(services.kafka, registry, names, events) == 4

    monitor = monitors(names, "mon-d").start()

    def dead(partner: str) -> int | None:
        view = monitor.view("dlq")
        return (
            None
            if view is None
            else next(r["records_total"] for r in view["partners"] if r["partner"] == partner)
        )

    monitor.wait("the burst counted", lambda: (dead("politie"), dead("om")) == (40, 26))
    silence = monitor.view("silence")
    assert silence is not None
    silent = {r["partner"]: r["silent"] for r in silence["partners"]}
    assert silent["politie"] is True and silent["om"] is False
    assert silent["halt"] is True  # never delivered on its weekly schedule
    metrics = monitor.get("/metrics")
    assert metrics is not None
    samples = _samples(metrics.text)
    assert samples[("ketenstroom_monitor_partner_silent", (("partner", "politie"),))] == 1
    assert samples[("ketenstroom_monitor_partner_silent", (("partner", "om"),))] == 0
    assert samples[("ketenstroom_monitor_dlq_spike", (("partner", "politie"),))] == 1
    assert samples[("ketenstroom_monitor_dlq_spike", (("partner", "om"),))] == 0
    assert samples[("ketenstroom_monitor_dlq_records_last_hour", (("partner", "politie"),))] == 40
    deadline = samples[
        ("ketenstroom_monitor_partner_delivery_deadline_timestamp_seconds", (("partner", "om"),))
    ]
    assert deadline == pytest.approx((now - timedelta(hours=2) + timedelta(days=1)).timestamp())
    assert (
        samples[("ketenstroom_monitor_oldest_dead_letter_age_seconds", (("partner", "om"),))]
        >= 24 * 3600 - 60
    )

    def status() -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--json", "-p", "om", "-p", "politie",
             "--storage", f"file://{tmp_path / 'store'}"],
            env={**monitor.env, "KETENSTROOM_PROCESSOR_APP_ID": f"{names.prefix}processor"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr[-2000:]  # politie is silent: needs action
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    report = status()
    assert report["monitor"]["up"] is True
    partners = {r["partner"]: r for r in report["partners"]}
    assert partners["politie"]["silent"] is True and partners["politie"]["silence_from"] == "monitor"
    assert partners["om"]["silent"] is False
    [open_period] = partners["om"]["completeness"]
    assert open_period["period"] == period_code(now - timedelta(minutes=5)) and open_period["events"] == 4
    assert partners["politie"]["completeness"] == []
    assert any("politie: silent" in line for line in report["needs_action"])

    assert monitor.stop(signal.SIGTERM) == 0
    report = status()  # the monitor is down: its fallbacks, the receipts on ops.deliveries
    assert report["monitor"] == {"up": False, "url": None}
    partners = {r["partner"]: r for r in report["partners"]}
    assert partners["politie"]["silent"] is True and partners["politie"]["silence_from"] == "deliveries"
    assert partners["om"]["completeness"] is None
