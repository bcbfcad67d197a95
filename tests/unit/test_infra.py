"""Pure tests of devstack: rendering, Java detection, pid files, ports. No network, no JVM."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import Endpoints, Stack, StackConfig
from devstack import fetch as fetch_mod
from devstack.config import default_cache_dir
from devstack.java import JavaRuntime, choose_java, find_java, parse_java_version
from devstack.process import marker_arg, owned_pid, port_in_use, port_owner, write_pid
from devstack.services import (
    cluster_identity,
    initial_controllers,
    kafka_uuid,
    render_s3proxy_conf,
    render_server_properties,
    s3_credentials,
)
from ketenstroom.errors import FetchError, InfraError, JavaNotFoundError, PortInUseError


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


@pytest.fixture
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(cache_dir=tmp_path / "cache")


# -- config -----------------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path: Path) -> None:
    assert default_cache_dir({"KETENSTROOM_CACHE_DIR": "/x", "XDG_CACHE_HOME": "/y"}) == Path("/x")
    assert default_cache_dir({"XDG_CACHE_HOME": "/y"}) == Path("/y/ketenstroom")
    assert default_cache_dir({}) == Path.home() / ".cache" / "ketenstroom"


def test_from_env_reads_prefixed_variables_and_nodes_argument_wins() -> None:
    env = {
        "KETENSTROOM_CACHE_DIR": "/c",
        "KETENSTROOM_INFRA_NODES": "1",
        "KETENSTROOM_INFRA_KAFKA_PORT": "9192",
        "KETENSTROOM_INFRA_JAVA21_HOME": "/opt/jdk25",
        "JAVA_HOME": "/opt/jdk17",
    }
    cfg = StackConfig.from_env(nodes=3, environ=env)
    assert cfg.nodes == 3
    assert cfg.stack_name == "cluster3"
    assert cfg.run_dir == Path("/c/run/cluster3")
    assert cfg.shared_run_dir == Path("/c/run/shared")
    assert cfg.dist_dir == Path("/c/dist")
    assert cfg.kafka_bootstrap == "127.0.0.1:19192,127.0.0.1:29192,127.0.0.1:39192"
    assert cfg.java21_home == Path("/opt/jdk25")
    assert cfg.system_java_home == Path("/opt/jdk17")
    assert cfg.java_home is None


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(InfraError, match="nodes=2"):
        StackConfig(cache_dir=Path("/c"), nodes=2)
    with pytest.raises(InfraError, match="KETENSTROOM_INFRA_S3_PORT"):
        StackConfig.from_env(environ={"KETENSTROOM_INFRA_S3_PORT": "eighty"})


def test_endpoints_hide_secret_and_export_env() -> None:
    eps = Endpoints("127.0.0.1:9092", "http://r", "http://s3", "AK", "very-secret")
    assert "very-secret" not in repr(eps)
    env = eps.as_env()
    assert env["KETENSTROOM_S3_SECRET_ACCESS_KEY"] == "very-secret"  # noqa: S105  # pragma: allowlist secret
    assert env["KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    assert env["KETENSTROOM_S3_BUCKET"] == "ketenstroom"
    assert env["KETENSTROOM_S3_REGION"] == "us-east-1"
    assert set(env) == {
        "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS",
        "KETENSTROOM_REGISTRY_URL",
        "KETENSTROOM_S3_ENDPOINT",
        "KETENSTROOM_S3_BUCKET",
        "KETENSTROOM_S3_ACCESS_KEY_ID",
        "KETENSTROOM_S3_SECRET_ACCESS_KEY",
        "KETENSTROOM_S3_REGION",
    }


# -- rendering --------------------------------------------------------------------------------------


def test_single_node_properties(cfg: StackConfig) -> None:
    p = props(render_server_properties(cfg, 1, Path("/d")))
    assert p["node.id"] == "1"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert p["advertised.listeners"] == p["listeners"]
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert p["log.dirs"] == "/d"
    assert p["offsets.topic.replication.factor"] == "1"
    assert p["share.coordinator.state.topic.min.isr"] == "1"
    assert "min.insync.replicas" not in p
    assert "default.replication.factor" not in p


def test_cluster_node_properties(tmp_path: Path) -> None:
    cfg = StackConfig(cache_dir=tmp_path, nodes=3)
    p = props(render_server_properties(cfg, 2, Path("/d2")))
    assert p["node.id"] == "2"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093,127.0.0.1:29093,127.0.0.1:39093"
    assert p["default.replication.factor"] == "3"
    assert p["min.insync.replicas"] == "2"
    assert p["unclean.leader.election.enable"] == "false"
    assert p["offsets.topic.replication.factor"] == "3"
    assert p["transaction.state.log.min.isr"] == "2"
    assert p["share.coordinator.state.topic.replication.factor"] == "3"
    assert p["num.io.threads"] == "2"
    assert p["num.replica.fetchers"] == "1"
    ident = {"cluster_id": "C", "1": "D1", "2": "D2", "3": "D3"}
    assert initial_controllers(cfg, ident) == (
        "1@127.0.0.1:19093:D1,2@127.0.0.1:29093:D2,3@127.0.0.1:39093:D3"
    )


def test_kafka_uuid_looks_like_kafka_random_uuid() -> None:
    ids = {kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        assert len(text) == 22
        assert not text.startswith("-")
        assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_pom_and_s3proxy_conf(cfg: StackConfig) -> None:
    pom = fetch_mod.render_kafka_pom()
    assert "<artifactId>kafka_2.13</artifactId><version>4.4.0</version>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId><version>2.25.5</version>" in pom
    assert "$" not in pom
    conf = props(render_s3proxy_conf(cfg, Path("/data"), "AK", "SK"))
    assert conf["s3proxy.endpoint"] == "http://127.0.0.1:8085"
    assert conf["jclouds.provider"] == "filesystem-nio2"
    assert conf["jclouds.filesystem.basedir"] == "/data"
    assert (conf["s3proxy.identity"], conf["s3proxy.credential"]) == ("AK", "SK")


def test_s3_credentials_generated_once_private_and_env_wins(cfg: StackConfig) -> None:
    first = s3_credentials(cfg)
    assert s3_credentials(cfg) == first
    path = cfg.shared_run_dir / "s3proxy" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    given = StackConfig(cache_dir=cfg.cache_dir, s3_access_key="a", s3_secret_key="s")  # noqa: S106 - made-up credentials
    assert s3_credentials(given) == ("a", "s")
    assert "'s'" not in repr(given)


# -- Java detection ---------------------------------------------------------------------------------

JAVA17 = (
    'openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)\n'
    "OpenJDK 64-Bit Server VM (build 17.0.15+6-Debian-1deb12u1, mixed mode, sharing)\n"
)
JAVA25 = (
    'openjdk version "25.0.1" 2025-10-21 LTS\n'
    "OpenJDK Runtime Environment Temurin-25.0.1+8 (build 25.0.1+8-LTS)\n"
)


def test_parse_java_version() -> None:
    assert parse_java_version(JAVA17) == (17, "17.0.15")
    assert parse_java_version(JAVA25) == (25, "25.0.1")
    assert parse_java_version('java version "1.8.0_392"') == (8, "1.8.0_392")
    assert parse_java_version('openjdk version "21" 2023-09-19') == (21, "21")
    assert parse_java_version("bash: java: command not found") is None


def test_choose_java() -> None:
    j17 = JavaRuntime(17, "17.0.15", Path("/a/java"))
    j25 = JavaRuntime(25, "25.0.1", Path("/b/java"))
    j21 = JavaRuntime(21, "21.0.2", Path("/c/java"))
    assert choose_java([j17, j25, j21], 21, prefer_newest=True) == j25
    assert choose_java([j17, j25], 17, prefer_newest=False) == j17
    assert choose_java([j17], 21, prefer_newest=True) is None


def fake_jdk(root: Path, banner: str) -> Path:
    """A directory with bin/java that prints ``banner`` to stderr, like a real ``java -version``."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True)
    lines = "".join(f"printf '%s\\n' '{line}' >&2\n" for line in banner.splitlines())
    java.write_text(f"#!/bin/sh\n{lines}")  # builtins only: the test empties PATH
    java.chmod(0o755)
    return root


def test_find_java_scans_and_picks_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    scan = tmp_path / "jvm"
    fake_jdk(scan / "jdk17", JAVA17)
    fake_jdk(scan / "temurin-25", JAVA25)
    found = find_java(
        min_major=21, explicit_home=None, explicit_env="X", system_java_home=None,
        prefer_newest=True, scan_dir=scan,
    )  # fmt: skip
    assert (found.major, found.executable) == (25, scan / "temurin-25" / "bin" / "java")
    home17 = scan / "jdk17"
    first = find_java(
        min_major=17, explicit_home=None, explicit_env="X", system_java_home=home17,
        prefer_newest=False, scan_dir=scan,
    )  # fmt: skip
    assert first.executable == home17 / "bin" / "java"


def test_find_java_explains_what_it_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    scan = tmp_path / "jvm"
    fake_jdk(scan / "jdk17", JAVA17)
    with pytest.raises(JavaNotFoundError) as err:
        find_java(
            min_major=21, explicit_home=None, explicit_env="KETENSTROOM_INFRA_JAVA21_HOME",
            system_java_home=None, prefer_newest=True, scan_dir=scan,
        )  # fmt: skip
    text = str(err.value)
    assert "17.0.15" in text and "KETENSTROOM_INFRA_JAVA21_HOME" in text and "temurin" in text
    with pytest.raises(JavaNotFoundError, match=r"is Java 17\.0\.15"):
        find_java(
            min_major=21, explicit_home=scan / "jdk17", explicit_env="KETENSTROOM_INFRA_JAVA21_HOME",
            system_java_home=None, prefer_newest=True, scan_dir=scan,
        )  # fmt: skip


# -- pid files and ports ----------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dead_pid_is_reported_not_running(cfg: StackConfig) -> None:
    stack = Stack(cfg)
    kafka = stack.services()[0]
    kafka.directory.mkdir(parents=True)
    pid = dead_pid()
    write_pid(kafka.pid_file, pid)
    assert owned_pid(kafka.pid_file, kafka.directory) is None
    status = {s.name: s for s in stack.status()}
    assert status["kafka-1"].pid is None
    assert not status["kafka-1"].healthy
    assert f"stale pid file names pid {pid}" in status["kafka-1"].detail
    assert status["s3proxy"].detail == "not running"
    assert stack.down() == []
    assert not kafka.pid_file.exists()


def test_live_pid_without_our_marker_is_not_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "service.pid"
    write_pid(pid_file, os.getpid())  # alive, but pytest's cmdline has no marker
    assert owned_pid(pid_file, tmp_path) is None
    assert marker_arg(tmp_path) == f"-Ddevstack.service={tmp_path}"


def test_port_in_use_detects_our_own_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
        owner = port_owner(port)
        assert owner is not None and f"pid {os.getpid()}" in owner
    assert not port_in_use(port)


def test_up_refuses_a_port_held_by_someone_else(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cfg = StackConfig(cache_dir=tmp_path, kafka_port=port, kafka_controller_port=port + 1)
        for directory in fetch_mod.Layout(cfg.dist_dir).all_dirs().values():  # pretend fetched
            directory.mkdir(parents=True)
            (directory / fetch_mod.MARKER).write_text("test\n")
        with pytest.raises(PortInUseError) as err:
            Stack(cfg).up()
    assert f"127.0.0.1:{port}" in str(err.value)
    assert f"pid {os.getpid()}" in str(err.value)


# -- fetch failures ---------------------------------------------------------------------------------


def test_fetch_reports_mvn_failure_and_redoes_partial_download(
    cfg: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    mvn = bindir / "mvn"
    mvn.write_text("#!/bin/sh\necho 'Could not transfer artifact: Connection refused'\nexit 1\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    layout = fetch_mod.Layout(cfg.dist_dir)
    with pytest.raises(FetchError) as err:
        fetch_mod.fetch_all(cfg)
    text = str(err.value)
    assert "Connection refused" in text
    assert "Maven Central unreachable" in text
    assert str(layout.kafka_dir / "fetch.log") in text
    assert not layout.is_complete("kafka")
    (layout.kafka_lib / "half-written.jar").parent.mkdir(parents=True, exist_ok=True)
    (layout.kafka_lib / "half-written.jar").write_text("")
    with pytest.raises(FetchError):
        fetch_mod.fetch_all(cfg)
    assert not (layout.kafka_lib / "half-written.jar").exists()


def test_fetch_without_maven(cfg: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devstack.fetch.shutil.which", lambda _name: None)
    with pytest.raises(FetchError, match="`mvn`"):
        fetch_mod.fetch_all(cfg)


def test_formatted_storage_refuses_changed_ports(tmp_path: Path) -> None:
    first = cluster_identity(StackConfig(cache_dir=tmp_path))
    assert cluster_identity(StackConfig(cache_dir=tmp_path)) == first
    with pytest.raises(InfraError, match="wipe"):
        cluster_identity(StackConfig(cache_dir=tmp_path, kafka_controller_port=9193))
