"""Alerts as code: ops/prometheus/rules.yml passes promtool's checks and its unit tests
(rules_test.yml), every alert has a runbook line and a test that makes it fire (and that test fails
when the rule is broken), every metric a rule reads is one a component or broker exports, and the
retention thresholds follow the catalogue and the topic settings."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ketenstroom.catalogue import catalogue_at
from ketenstroom.settings import CatalogueSettings, TopicSettings
from tests.metric_names import MONITOR, defined_names, monitor_names, names_in

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
DAY = 86_400


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


def test_rules_read_only_metrics_the_components_export() -> None:
    read = {name for alert in _alerts() for name in names_in(alert["expr"])}
    assert read and read <= defined_names(), sorted(read - defined_names())
    # every component and the brokers are watched
    assert {n.split("_")[1] for n in read if n.startswith("ketenstroom_")} >= {"processor", "sink", "monitor"}
    assert any(n.startswith("kafka_") for n in read)


def test_the_monitor_defines_the_agreed_metric_names() -> None:
    assert monitor_names() == MONITOR


def _records() -> dict[tuple[str, str | None], float]:
    groups = yaml.safe_load((OPS / "rules.yml").read_text(encoding="utf-8"))["groups"]
    found: dict[tuple[str, str | None], float] = {}
    for rule in (r for g in groups for r in g["rules"] if "record" in r):
        a, _, b = str(rule["expr"]).partition("*")
        value = float(a) * float(b) if b else float(a)
        found[(rule["record"], rule.get("labels", {}).get("partner"))] = value
    return found


def test_retention_thresholds_follow_the_catalogue_and_the_topic_settings() -> None:
    catalogue = catalogue_at(CatalogueSettings().dir)
    retention = TopicSettings()
    expected: dict[tuple[str, str | None], float] = {
        ("ketenstroom:raw_retention_seconds", name): p.topics.retention_days * DAY
        for name, p in catalogue.partners.items()
    }
    dlq = retention.dlq_retention_days
    expected[("ketenstroom:dlq_retention_seconds", None)] = math.inf if dlq is None else dlq * DAY
    expected[("ketenstroom:curated_retention_seconds", None)] = retention.curated_retention_days * DAY
    assert _records() == expected


def test_partner_silence_is_the_monitors_judgement_not_a_partner_list() -> None:
    (silent,) = [a for a in _alerts() if a["alert"] == "KetenstroomPartnerSilent"]
    assert "ketenstroom_monitor_partner_silent" in silent["expr"]
    assert "partner=~" not in silent["expr"]


def test_each_alerts_unit_test_fails_when_its_rule_never_fires(tmp_path: Path) -> None:
    """Break one rule at a time (its expression can never be true): promtool's tests must notice each.
    One promtool run over one copy of the rule's own tests per broken rule."""
    alerts = [a["alert"] for a in _alerts()]
    files = []
    for alert in alerts:
        doc = yaml.safe_load((OPS / "rules.yml").read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = "vector(1) == 0"
        case = tmp_path / alert
        case.mkdir()
        (case / "rules.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        tests = yaml.safe_load((OPS / "rules_test.yml").read_text(encoding="utf-8"))
        tests["tests"] = [  # only its own cases: the run stays short
            {**t, "alert_rule_test": [a for a in t["alert_rule_test"] if a["alertname"] == alert]}
            for t in tests["tests"]
            if any(a["alertname"] == alert for a in t.get("alert_rule_test", []))
        ]
        (case / "rules_test.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
        files.append(str(case / "rules_test.yml"))
    _promtool("--version")  # fails the test clearly when promtool is missing
    broken = subprocess.run(
        ["promtool", "test", "rules", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # "Unit Testing: <file>" goes to stdout, its FAILED to stderr: keep order
        text=True,
        timeout=300,
        check=False,
    )
    assert broken.returncode != 0
    verdicts = dict(re.findall(r"Unit Testing:\s+(\S+)\s*\n\s+(SUCCESS|FAILED)", broken.stdout))
    passed_anyway = [a for a, f in zip(alerts, files, strict=True) if verdicts.get(f) != "FAILED"]
    assert not passed_anyway, f"tests still pass with these rules broken: {passed_anyway}"
