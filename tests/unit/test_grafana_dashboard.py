"""ops/grafana/ketenstroom.json is a Grafana dashboard an operator can import: valid dashboard JSON
with a datasource variable, every panel's query parses as PromQL (promtool checks each as a
recording rule) and reads only metrics a component, a broker or a recording rule defines. The live
test (tests/integration/test_monitoring.py) runs each query on a real Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.metric_names import defined_names, names_in

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "ketenstroom.json"
#: Grafana's macros, replaced by what Grafana would send for a 15 s scrape interval
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1d"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's macros filled in) for every target of every panel."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for macro, value in MACROS.items():
                expr = expr.replace(macro, value)
            found.append((panel["title"], expr))
    return found


def test_dashboard_json_is_an_importable_grafana_dashboard() -> None:
    d = dashboard()
    assert d["uid"] == "ketenstroom-chain" and d["title"]
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    (variable,) = d["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in d["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip()
    # panels never overlap
    cells = set()
    for panel in d["panels"]:
        g = panel["gridPos"]
        box = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & box, f"{panel['title']} overlaps another panel"
        cells |= box


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install -y prometheus (or run `make test`)")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": e} for n, (_t, e) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries())} rules found" in checked.stdout


def test_queries_read_only_defined_metrics_and_cover_the_chain() -> None:
    read: set[str] = set()
    for title, expr in queries():
        names = names_in(expr)
        assert names or "ALERTS" in expr, f"{title}: no metric in {expr}"
        assert names <= defined_names(), (title, sorted(names - defined_names()))
        read |= names
    wanted = {
        "ketenstroom_monitor_deliveries_total",  # per-partner deliveries
        "ketenstroom_monitor_period_completeness_ratio",  # completeness
        "ketenstroom_processor_dead_lettered_total",  # DLQ
        "ketenstroom_processor_consumer_lag",  # lag in records
        "ketenstroom_processor_consumer_lag_seconds",  # lag in seconds
        "ketenstroom_processor_latency_seconds_bucket",  # latency
        "ketenstroom_processor_transactions_total",  # transactions
        "ketenstroom_sink_last_seal_timestamp_seconds",  # seal state
        "ketenstroom_monitor_period_seal_due_timestamp_seconds",
        "kafka_server_replicamanager_underreplicatedpartitions",  # broker health
        "kafka_controller_kafkacontroller_activecontrollercount",
    }
    assert wanted <= read, sorted(wanted - read)


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    """The checks above can fail: an unknown metric and a PromQL syntax error are both found."""
    assert names_in("sum by (partner) (rate(ketenstroom_processor_recordz_total[1m]))") - defined_names()
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "d:q", "expr": "sum by (("}]}]})
    )
    checked = subprocess.run(
        ["promtool", "check", "rules", str(bad)], capture_output=True, text=True, check=False
    )
    assert checked.returncode != 0
