"""Monitoring on the real stack: Debian's Prometheus scrapes the real processor, sink, delivery monitor
and the broker's JMX exporter while a generated chain runs through them; every alert rule's series
and every dashboard query returns data through Prometheus' HTTP API; one partner that stops
delivering fires the silence alert and a DLQ burst fires the DLQ alerts, both received by an
Alertmanager webhook this test serves.

The rules are the shipped ops/prometheus/rules.yml with only their ``for:`` durations and range
windows shortened (``render_rules``), so a test of a few minutes sees what operators would see in
hours. The partner that stops delivering has a one-minute schedule in a copy of the catalogue the
monitor reads; every other fact is the repository's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer

from devstack import Stack, StackConfig
from devstack.config import MonitoringConfig
from devstack.monitoring import SHIPPED_RULES
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import Topics
from ketenstroom.settings import CatalogueSettings
from producers.publish import Publisher
from synthetic import generate_chain
from tests.conftest import Services
from tests.metric_names import names_in
from tests.unit.test_grafana_dashboard import queries

REPO = Path(__file__).resolve().parents[2]
PARTNERS = sorted(catalogue_at(CatalogueSettings().dir).names)
SILENT = "om"  # stops delivering after its first delivery; its schedule here is a minute
SILENT_AFTER_S = 60
BURST = "politie"  # gets a burst of records the processor must dead-letter
BURST_SIZE = 40
KEY = "monitoring-test-key-0123456789abcdef0123"  # pragma: allowlist secret
DEADLINE_S = 180
SINK_ARGS = ("--no-tables", "--no-release", "--site", "")


def render_rules(text: str, *, for_: str, window: str, step: str = "1s") -> str:
    """The shipped rules with every ``for:`` set to ``for_``, every range ``[15m]`` and ``offset 15m``
    to ``window`` (a subquery ``[15m:1m]`` to ``[window:step]``); expressions and thresholds otherwise
    as shipped."""
    doc = yaml.safe_load(text)
    ranges = re.compile(r"\[(\d+[smhdw])(?::(\d+[smhdw]))?\]")
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = for_
            expr = ranges.sub(
                lambda m: f"[{window}:{step}]" if m.group(2) else f"[{window}]", str(rule["expr"])
            )
            rule["expr"] = re.sub(r"\boffset \d+[smhdw]\b", f"offset {window}", expr)
    return yaml.safe_dump(doc, sort_keys=False)


def test_render_rules_shortens_only_durations_and_windows() -> None:
    shipped = yaml.safe_load(SHIPPED_RULES.read_text())
    fast = yaml.safe_load(render_rules(SHIPPED_RULES.read_text(), for_="2s", window="1m"))
    for before, after in zip(
        (r for g in shipped["groups"] for r in g["rules"]),
        (r for g in fast["groups"] for r in g["rules"]),
        strict=True,
    ):

        def shape(expr: str) -> str:
            return re.sub(r"offset \w+", "offset", re.sub(r"\[[^\]]+\]", "[]", expr))

        assert shape(before["expr"]) == shape(after["expr"])
        assert after.get("for", "2s") == "2s"
        assert {k: v for k, v in before.items() if k not in ("for", "expr")} == {
            k: v for k, v in after.items() if k not in ("for", "expr")
        }
    lag = next(
        r for g in fast["groups"] for r in g["rules"] if r.get("alert") == "KetenstroomProcessorLagGrowing"
    )
    assert "[1m:1s]" in lag["expr"] and "15m" not in lag["expr"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Webhook:
    """Alertmanager's webhook receiver: every alert it is sent, as (status, labels)."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, str]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.extend((a["status"], a["labels"]) for a in body["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def firing(self, alertname: str) -> set[str]:
        """Partners (or '' for an alert without one) this alert was sent as firing for."""
        return {
            labels.get("partner", "")
            for status, labels in list(self.received)
            if status == "firing" and labels["alertname"] == alertname
        }


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def _catalogue_with_short_schedule(root: Path) -> Path:
    """The repository's catalogue, except that SILENT's declared schedule is a minute."""
    root.mkdir()
    for name in ("schemas", "terminology", "publication"):
        (root / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "partners", root / "partners")
    toml = root / "partners" / SILENT / "partner.toml"
    text, n = re.subn(
        r"^delivery_every_days = .*$",
        f"delivery_every_days = {SILENT_AFTER_S / 86400!r}",
        toml.read_text(),
        flags=re.MULTILINE,
    )
    assert n == 1
    toml.write_text(text)
    return root


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.base}/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str) -> dict[str, float]:
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in self.query(expr)}


def _selectors(expr: str) -> list[str]:
    """Each metric selector of a PromQL expression, label matchers included, e.g.
    ``up{job=~"ketenstroom-(processor|sink|monitor|kafka)"}``."""
    found = []
    for name in sorted(names_in(expr)):
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(\{{[^}}]*\}})?", expr):
            found.append(match.group(0))
    return sorted(set(found))


def _wait(what: str, check: Callable[[], Any], procs: list[subprocess.Popen[str]], deadline: float) -> None:
    """Poll ``check`` until it returns True (anything else is what is still missing), with a deadline;
    fail at once if a component exits."""
    last: Any = None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[3]} exited {proc.returncode} while waiting for {what}")
        last = check()
        if last is True:
            return
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}; still: {last}")


def _spawn(args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[str]:
    """A component with its stderr in ``logs/<command>.log`` (a pipe nobody reads would block it)."""
    logs.mkdir(exist_ok=True)
    with (logs / f"{args[3]}.log").open("w") as log:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)


def _stop(procs: list[subprocess.Popen[str]], logs: Path) -> list[str]:
    errors = []
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -15):
            text = (logs / f"{proc.args[3]}.log").read_text()
            errors.append(f"{proc.args[3]} exited {proc.returncode}: {text[-1500:]}")
    return errors


def test_prometheus_sees_the_chain_and_alertmanager_delivers_silence_and_dlq_alerts(
    services: Services, names: Topics, tmp_path: Path, webhook: Webhook
) -> None:
    started = time.monotonic()
    deadline = started + DEADLINE_S
    ports = {c: _free_port() for c in ("processor", "sink", "monitor")}
    env = {
        **services.env(names),
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "m1",
        "KETENSTROOM_PROCESSOR_METRICS_PORT": str(ports["processor"]),
        "KETENSTROOM_SINK_METRICS_PORT": str(ports["sink"]),
        "KETENSTROOM_MONITOR_METRICS_PORT": str(ports["monitor"]),
    }
    made = subprocess.run(
        [sys.executable, "-m", "cli", "topics", "--partitions", "1", "--replication-factor", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    exports = generate_chain(tmp_path / "exports", cases=150, seed=11, noise=0.0)

    # Prometheus and Alertmanager with the shipped rules on short timings, next to the running stack
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(SHIPPED_RULES.read_text(), for_="2s", window="1m"))
    base = StackConfig.from_env(nodes=1)
    monitoring = MonitoringConfig(
        enabled=True,
        prometheus_port=_free_port(),
        alertmanager_port=_free_port(),
        scrape_interval="1s",
        evaluation_interval="1s",
        rules_file=rules,
        webhook_url=webhook.url,
        group_wait="1s",
        group_interval="1s",
        targets={f"ketenstroom-{c}": (f"127.0.0.1:{p}",) for c, p in ports.items()},
        directory=tmp_path / "monitoring",
    )
    stack = Stack(dataclasses.replace(base, monitoring=monitoring))
    cli = [sys.executable, "-m", "cli"]
    logs = tmp_path / "logs"
    procs: list[subprocess.Popen[str]] = []
    try:
        stack.up_monitoring()
        prom = Prometheus(monitoring.prometheus_port)
        procs.append(_spawn([*cli, "process", "--app-id", f"{names.prefix}processor"], env, logs))
        store = f"file://{tmp_path / 'store'}"
        procs.append(
            _spawn(
                [*cli, "sink", "--storage", store, "--group", f"{names.prefix}sink", *SINK_ARGS], env, logs
            )
        )
        catalogue = _catalogue_with_short_schedule(tmp_path / "catalogue")
        procs.append(_spawn([*cli, "monitor"], {**env, "KETENSTROOM_CATALOGUE_DIR": str(catalogue)}, logs))
        # the chain: every partner delivers once
        silent_from = 0.0  # before SILENT's delivery finished: its deadline is a minute after that
        for partner in PARTNERS:
            if partner == SILENT:
                silent_from = time.monotonic()
            with Publisher(
                partner, kafka=services.kafka, registry=services.registry, topics=names
            ) as publisher:
                publisher.publish([Path(exports.partners[partner].path)])

        # every target is scraped, the broker's JMX exporter included
        def targets_up() -> bool | dict[str, float]:
            up = prom.values('up{job=~"ketenstroom-.*"}')
            jobs = {json.loads(k)["job"]: v for k, v in up.items()}
            return True if len(jobs) == 4 and set(jobs.values()) == {1.0} else jobs

        _wait("every component and the broker to be up in Prometheus", targets_up, procs, deadline)
        # before the silence: the monitor saw SILENT's delivery in time, so it was not silent
        _wait(
            f"the monitor to report {SILENT} not silent",
            lambda: bool(prom.values(f'ketenstroom_monitor_partner_silent{{partner="{SILENT}"}} == 0')),
            procs,
            deadline,
        )

        # a DLQ burst: records the processor cannot read, all dead-lettered
        producer = Producer(services.kafka.librdkafka())
        for n in range(BURST_SIZE):
            producer.produce(names.raw(BURST), key=f"burst-{n}".encode(), value=b"not an avro record")
        assert producer.flush(30) == 0
        assert BURST not in webhook.firing("KetenstroomDeadLetterSpike")

        # every alert's series and every dashboard query return data
        alerts = [r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r]
        selectors = sorted({s for a in alerts for s in _selectors(a["expr"])})
        assert len(selectors) >= 20, selectors
        panels = queries()

        def all_answer() -> bool | list[str]:
            missing = [s for s in selectors if not prom.query(s)]
            missing += [f"{t}: {e}" for t, e in panels if not prom.query(e)]
            return missing or True

        _wait("every alert series and dashboard query to return data", all_answer, procs, deadline)

        # the DLQ burst fires the DLQ alerts; the partner that stopped delivering, the silence alert
        _wait(
            f"KetenstroomDeadLetterSpike for {BURST} at the webhook",
            lambda: BURST in webhook.firing("KetenstroomDeadLetterSpike"),
            procs,
            deadline,
        )
        _wait(
            f"KetenstroomDeadLetterRatio for {BURST} at the webhook",
            lambda: BURST in webhook.firing("KetenstroomDeadLetterRatio"),
            procs,
            deadline,
        )
        _wait(
            f"KetenstroomPartnerSilent for {SILENT} at the webhook",
            lambda: SILENT in webhook.firing("KetenstroomPartnerSilent"),
            procs,
            deadline,
        )
        assert time.monotonic() - silent_from >= SILENT_AFTER_S  # not before its schedule ran out
        # only that partner: every other one delivered and has a schedule of a day or more
        assert webhook.firing("KetenstroomPartnerSilent") == {SILENT}
        assert prom.values("ketenstroom_monitor_partner_silent == 1") and {
            json.loads(k)["partner"] for k in prom.values("ketenstroom_monitor_partner_silent == 1")
        } == {SILENT}
        # `ketenstroom status` names the firing alerts it reads from this Alertmanager, and exits 1
        shown = subprocess.run(
            [*cli, "status", "--json", "--storage", f"file://{tmp_path / 'store'}"],
            env={**env, "KETENSTROOM_ALERTMANAGER_URL": f"http://127.0.0.1:{monitoring.alertmanager_port}"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert shown.returncode == 1, shown.stderr[-2000:]
        report = json.loads(shown.stdout)
        assert report["alerts"]["up"] is True
        firing = {(a["alertname"], a["partner"]) for a in report["alerts"]["firing"]}
        assert ("KetenstroomPartnerSilent", SILENT) in firing
        assert (
            f"alert KetenstroomPartnerSilent ({SILENT}): no delivery from {SILENT} within its declared schedule"
            in (report["needs_action"])
        )
        # the processor counted the burst as dead letters of that partner
        dead = prom.values(f'sum(ketenstroom_processor_dead_lettered_total{{partner="{BURST}"}})')
        assert list(dead.values()) and next(iter(dead.values())) >= BURST_SIZE
    finally:
        errors = _stop(procs, logs)
        print(*errors, sep="\n")  # shown with a failure above, too
        stack.down_monitoring()
    assert not errors, errors
    print(f"monitoring live test: {time.monotonic() - started:.0f} s")
