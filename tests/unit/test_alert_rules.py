"""Alerts as code: ops/prometheus/rules.yml passes promtool's checks and its unit tests
(rules_test.yml), every alert has a runbook line and a test that makes it fire, every metric a rule
reads is one the components export, and the partner-silence rule follows the catalogue's schedules."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ketenstroom.catalogue import catalogue_at
from ketenstroom.settings import CatalogueSettings
from processors.metrics import ProcessorMetrics
from sinks.metrics import SinkMetrics

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:  # `make test` and .ci/run install it; a bare pytest run may not have it
        pytest.fail("promtool not found: apt-get install -y prometheus (or run `make test`)")
    return subprocess.run(
        [promtool, *args], cwd=OPS, capture_output=True, text=True, timeout=120, check=False
    )


def _alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((OPS / "rules.yml").read_text(encoding="utf-8"))
    return [r for group in rules["groups"] for r in group["rules"] if "alert" in r]


def test_config_and_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_runbook_and_a_test_that_fires_it() -> None:
    tests = yaml.safe_load((OPS / "rules_test.yml").read_text(encoding="utf-8"))["tests"]
    fired = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    alerts = _alerts()
    assert len(alerts) >= 9
    for alert in alerts:
        assert alert["annotations"].get("runbook"), f"{alert['alert']} has no runbook line"
        assert alert["alert"] in fired, f"no test makes {alert['alert']} fire"


def _exported() -> set[str]:
    names: set[str] = set()
    for metrics in (ProcessorMetrics(CollectorRegistry()), SinkMetrics(CollectorRegistry())):
        for family in metrics.registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_rules_read_only_metrics_the_components_export() -> None:
    read = {name for alert in _alerts() for name in re.findall(r"\b(ketenstroom_[a-z_]+)\b", alert["expr"])}
    assert read and read <= _exported(), sorted(read - _exported())


def test_partner_silence_follows_each_partners_delivery_schedule() -> None:
    (silent,) = [a for a in _alerts() if a["alert"] == "KetenstroomPartnerSilent"]
    windows: dict[str, int] = {}
    for partners, days in re.findall(r'partner=~"([a-z|-]+)"\}\[(\d+)d\]', silent["expr"]):
        for partner in partners.split("|"):
            windows[partner] = int(days)
    catalogue = catalogue_at(CatalogueSettings().dir)
    expected = {
        name: int(p.delivery_every_days) + 1
        for name, p in catalogue.partners.items()
        if p.delivery_every_days is not None
    }
    assert windows == expected  # a schedule plus a day's slack, for every partner with one
