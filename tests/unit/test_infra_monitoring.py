"""Pure tests of the monitoring part of devstack: the generated Prometheus and Alertmanager configs,
their loopback-only command lines, the brokers' JMX exporter agent and ports, and ownership of a
non-JVM process by its config file. No Prometheus, no JVM."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import Stack, StackConfig
from devstack.config import MonitoringConfig
from devstack.fetch import Layout
from devstack.monitoring import (
    SHIPPED_RULES,
    alertmanager_argv,
    prepare,
    prometheus_argv,
    render_alertmanager_config,
    render_prometheus_config,
    scrape_targets,
)
from devstack.process import owned_pid, write_pid
from devstack.services import jmx_agent_arg, kafka_argv, kafka_services, monitoring_services
from ketenstroom.errors import InfraError


def _config(tmp_path: Path, **monitoring: object) -> StackConfig:
    return StackConfig(cache_dir=tmp_path, monitoring=MonitoringConfig(enabled=True, **monitoring))  # type: ignore[arg-type]


def test_settings_from_the_environment() -> None:
    cfg = StackConfig.from_env(
        environ={
            "KETENSTROOM_CACHE_DIR": "/c",
            "KETENSTROOM_INFRA_KAFKA_METRICS_PORT": "9652",
            "KETENSTROOM_INFRA_PROMETHEUS_PORT": "9680",
            "KETENSTROOM_INFRA_ALERTMANAGER_PORT": "9681",
            "KETENSTROOM_INFRA_ALERT_WEBHOOK_URL": "http://127.0.0.1:9699/hook",
            "KETENSTROOM_PROCESSOR_METRICS_PORT": "9664",
            "KETENSTROOM_SINK_METRICS_PORT": "0",  # off for the component: scrape where it would be
        }
    )
    mon = cfg.monitoring
    assert (cfg.kafka_metrics_port_of(1), mon.prometheus_port, mon.alertmanager_port) == (9652, 9680, 9681)
    # unset, it follows the Kafka port: a second stack with its own Kafka port needs no other setting
    second = StackConfig.from_env(environ={"KETENSTROOM_INFRA_KAFKA_PORT": "9192"})
    assert second.kafka_metrics_port_of(1) == 9504
    assert StackConfig.from_env(environ={}).kafka_metrics_port_of(1) == 9404
    assert mon.webhook_url == "http://127.0.0.1:9699/hook" and not mon.enabled
    assert dict(mon.targets) == {
        "ketenstroom-processor": ("127.0.0.1:9664",),
        "ketenstroom-sink": ("127.0.0.1:9465",),
        "ketenstroom-monitor": ("127.0.0.1:9466",),
    }
    defaults = StackConfig(cache_dir=Path("/c")).monitoring
    assert (defaults.prometheus_port, defaults.alertmanager_port) == (9690, 9691)  # 9093 is Kafka's
    with pytest.raises(InfraError, match="KETENSTROOM_INFRA_PROMETHEUS_PORT"):
        StackConfig.from_env(environ={"KETENSTROOM_INFRA_PROMETHEUS_PORT": "ninety"})


def test_prometheus_scrapes_every_component_and_broker_on_loopback(tmp_path: Path) -> None:
    cfg = dataclasses.replace(_config(tmp_path, scrape_interval="1s"), nodes=3, kafka_metrics_port=9652)
    doc = json.loads(render_prometheus_config(cfg, tmp_path / "rules.yml").split("\n", 1)[1])
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in doc["scrape_configs"]}
    assert jobs == {
        "ketenstroom-processor": ["127.0.0.1:9464"],
        "ketenstroom-sink": ["127.0.0.1:9465"],
        "ketenstroom-monitor": ["127.0.0.1:9466"],
        "ketenstroom-kafka": ["127.0.0.1:19652", "127.0.0.1:29652", "127.0.0.1:39652"],
    }
    assert jobs == {k: list(v) for k, v in scrape_targets(cfg).items()}
    assert doc["global"]["scrape_interval"] == "1s"
    assert doc["rule_files"] == [str(tmp_path / "rules.yml")]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9691"]


def test_generated_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    cfg = _config(tmp_path, webhook_url="http://127.0.0.1:9699/hook", group_wait="1s")
    directory = tmp_path / "mon"
    config = prepare(cfg, directory / "prometheus", "prometheus")
    assert (directory / "prometheus" / "rules.yml").read_text() == SHIPPED_RULES.read_text()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install -y prometheus (or run `make test`)")
    checked = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    am = json.loads(render_alertmanager_config(cfg).split("\n", 1)[1])
    assert am["receivers"] == [
        {
            "name": "ketenstroom",
            "webhook_configs": [{"url": "http://127.0.0.1:9699/hook", "send_resolved": True}],
        }
    ]
    assert am["route"]["group_wait"] == "1s"
    no_hook = json.loads(render_alertmanager_config(_config(tmp_path)).split("\n", 1)[1])
    assert no_hook["receivers"] == [{"name": "ketenstroom"}]


def test_command_lines_listen_on_loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    cfg = _config(tmp_path, prometheus_port=9680, alertmanager_port=9681)
    prom = prometheus_argv(cfg, tmp_path / "p")
    assert "--web.listen-address=127.0.0.1:9680" in prom
    assert f"--config.file={tmp_path / 'p' / 'prometheus.yml'}" in prom
    am = alertmanager_argv(cfg, tmp_path / "a")
    assert "--web.listen-address=127.0.0.1:9681" in am
    assert "--cluster.listen-address=" in am  # no gossip listener on 0.0.0.0:9094


def test_a_missing_binary_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(InfraError, match="prometheus-alertmanager"):
        prometheus_argv(_config(tmp_path), tmp_path)


def test_brokers_run_the_jmx_exporter_on_their_own_loopback_port(tmp_path: Path) -> None:
    cfg = StackConfig(cache_dir=tmp_path, nodes=3, kafka_metrics_port=9652)
    layout = Layout(cfg.dist_dir)
    nodes = kafka_services(cfg)
    assert [s.ports for s in nodes] == [(19092, 19093, 19652), (29092, 29093, 29652), (39092, 39093, 39652)]
    arg = jmx_agent_arg(cfg, nodes[1], layout)
    assert (
        arg
        == f"-javaagent:{layout.jmx_exporter_jar}=127.0.0.1:29652:{nodes[1].directory / 'jmx-exporter.yaml'}"
    )
    assert arg in kafka_argv(cfg, nodes[1], Path("/java"), layout)
    single = StackConfig(cache_dir=tmp_path)
    assert kafka_services(single)[0].ports == (9092, 9093, 9404)
    assert StackConfig(cache_dir=tmp_path, secure=True).kafka_metrics_port_of(1) == 49404


def test_monitoring_services_only_when_enabled_and_in_their_own_directory(tmp_path: Path) -> None:
    assert [s.name for s in Stack(StackConfig(cache_dir=tmp_path)).services()] == [
        "kafka-1",
        "apicurio",
        "s3proxy",
    ]
    cfg = _config(tmp_path)
    assert [s.name for s in Stack(cfg).services()][-2:] == ["prometheus", "alertmanager"]
    assert [s.directory for s in monitoring_services(cfg)] == [
        tmp_path / "run" / "single" / "monitoring" / "prometheus",
        tmp_path / "run" / "single" / "monitoring" / "alertmanager",
    ]
    elsewhere = _config(tmp_path, directory=tmp_path / "t")
    assert monitoring_services(elsewhere)[0].directory == tmp_path / "t" / "prometheus"


def test_a_process_with_our_config_file_is_ours(tmp_path: Path) -> None:
    """Prometheus takes no -D marker: its --config.file inside the service directory marks it."""
    ours = tmp_path / "prometheus"
    ours.mkdir()
    script = "import time; time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", script, f"--config.file={ours}/prometheus.yml"])
    try:
        write_pid(ours / "service.pid", proc.pid)
        deadline = time.monotonic() + 10
        while owned_pid(ours / "service.pid", ours) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd with its argv
        assert owned_pid(ours / "service.pid", ours) == proc.pid
        assert owned_pid(ours / "service.pid", tmp_path / "other") is None
    finally:
        proc.kill()
        proc.wait()


def test_every_port_the_stacks_listen_on_can_be_reserved_from_ephemeral_use() -> None:
    # the secured stack (+40000) and the cluster's third node (39092) lie inside Linux's ephemeral range
    from devstack.config import listening_ports

    ports = listening_ports(StackConfig(cache_dir=Path("/c")))
    assert {9092, 9093, 9404, 8080, 9000, 8085, 19092, 29093, 39092, 39093, 39404} <= set(ports)
    assert {49092, 49093, 49404, 48080, 49000, 48085} <= set(ports)
