"""Every metric name some ketenstroom component defines, for tests of the alert rules and the
dashboard: the processor's and the sink's registries, the delivery monitor's contract names, the
brokers' JMX exporter rules (devstack/resources/jmx-exporter.yaml), Prometheus' own ``up``, and the
recording rules of ops/prometheus/rules.yml."""

from __future__ import annotations

import re
import time
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from monitor.views import MonitorCollector, TableContents, build_views
from processors.metrics import ProcessorMetrics
from sinks.metrics import SinkMetrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "ops" / "prometheus" / "rules.yml"
JMX_RULES = ROOT / "devstack" / "resources" / "jmx-exporter.yaml"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}

#: The delivery monitor's metrics as agreed between the monitor and the monitoring work
#: (tests/unit/test_alert_rules.py checks the monitor defines exactly these).
MONITOR = {
    "ketenstroom_monitor_period_events",
    "ketenstroom_monitor_period_completeness_ratio",
    "ketenstroom_monitor_period_seal_due_timestamp_seconds",
    "ketenstroom_monitor_partner_last_delivery_timestamp_seconds",
    "ketenstroom_monitor_partner_delivery_deadline_timestamp_seconds",
    "ketenstroom_monitor_partner_silent",
    "ketenstroom_monitor_deliveries_total",
    "ketenstroom_monitor_delivery_rows_total",
    "ketenstroom_monitor_dlq_records_last_hour",
    "ketenstroom_monitor_dlq_spike",
    "ketenstroom_monitor_oldest_dead_letter_age_seconds",
    "ketenstroom_monitor_events_total",
    "ketenstroom_monitor_up",
}


def monitor_names() -> set[str]:
    """What the delivery monitor's collector yields for views built from empty tables."""
    collector = MonitorCollector()
    collector.views = build_views(TableContents(), schedules={"om": 1.0}, now=time.time(), grace_days=14)
    return {f.name + SUFFIXES[f.type][0] for f in collector.collect()}


def component_names() -> set[str]:
    names: set[str] = set()
    for metrics in (ProcessorMetrics(CollectorRegistry()), SinkMetrics(CollectorRegistry())):
        for family in metrics.registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names | monitor_names()


def broker_names() -> set[str]:
    """Names the JMX exporter rules produce: each alternative of a rule's first group in its name."""
    names: set[str] = set()
    for rule in yaml.safe_load(JMX_RULES.read_text(encoding="utf-8"))["rules"]:
        group = re.search(r"\(([^()]*)\)", rule["pattern"])
        choices = group.group(1).split("|") if group and "$1" in rule["name"] else [""]
        names.update(rule["name"].replace("$1", c).lower() for c in choices)
    return names


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def defined_names() -> set[str]:
    return component_names() | broker_names() | recorded_names() | {"up"}


#: a metric name inside a PromQL expression (not a function, label or keyword: tested against the set)
NAME = re.compile(r"\b((?:ketenstroom|kafka)[a-z_:]*|up)\b(?!\s*\()")


def names_in(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(
        r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels
    )
    return set(NAME.findall(without_groupings))
