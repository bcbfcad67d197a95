"""Configuration and result types of the local stack.

Everything that can vary between machines (where the cache lives, which ports, which Java) is in one
frozen :class:`StackConfig`, read from the environment exactly once in :meth:`StackConfig.from_env`.
Nothing in this package reads ``os.environ`` at import time, so tests can build configs by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ketenstroom.errors import InfraError

ENV_PREFIX = "KETENSTROOM_INFRA_"

KAFKA_VERSION = "4.4.0"
APICURIO_VERSION = "3.3.3"
S3PROXY_VERSION = "4.0.0"

#: Bucket created (as a directory) before s3proxy starts, so writers never have to create it.
S3_BUCKET = "ketenstroom"
S3_REGION = "us-east-1"

#: The brokers' metrics port is the Kafka port plus this unless set (9092 -> 9404).
KAFKA_METRICS_OFFSET = 312

#: Name of the directory under ``<cache>/run`` holding state shared by both stacks (registry, s3proxy).
SHARED_STACK = "shared"
#: The secured stack listens on this offset from every configured port (e.g. 49092, 48080, 48085), so
#: it runs beside the plain stack the rest of the suite uses.
SECURE_PORT_OFFSET = 40000


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$KETENSTROOM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ketenstroom``, else ``~/.cache/ketenstroom``."""
    explicit = environ.get("KETENSTROOM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "ketenstroom"
    return Path.home() / ".cache" / "ketenstroom"


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InfraError(f"{ENV_PREFIX}{name}={raw!r} is not an integer; expected e.g. {default}") from None


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name)
    return Path(raw).expanduser() if raw else None


def _monitor_target(environ: Mapping[str, str], component: str, default_port: int) -> str:
    """``host:port`` where a component serves ``/metrics``: its own settings, else the documented port."""
    host = environ.get(f"KETENSTROOM_{component}_METRICS_HOST") or "127.0.0.1"
    raw = environ.get(f"KETENSTROOM_{component}_METRICS_PORT") or ""
    port = int(raw) if raw.isdigit() and int(raw) > 0 else default_port
    return f"{host}:{port}"


#: The components Prometheus scrapes (job ``ketenstroom-<name>``) and their default metrics ports.
COMPONENT_PORTS = {"processor": 9464, "sink": 9465, "monitor": 9466}


@dataclass(frozen=True)
class MonitoringConfig:
    """Prometheus and Alertmanager next to the stack (``infra up --with-monitoring``).

    The shipped rules (``ops/prometheus/rules.yml``) and intervals are the defaults; a test points
    ``rules_file`` at rules rendered with short ``for:`` durations and windows, and ``webhook_url`` at
    a receiver of its own.
    """

    enabled: bool = False
    prometheus_port: int = 9690
    alertmanager_port: int = 9691
    scrape_interval: str = "15s"
    evaluation_interval: str = "30s"
    #: None: the repository's ops/prometheus/rules.yml
    rules_file: Path | None = None
    #: Alertmanager sends every alert here (a webhook receiver); None: alerts are only shown in its UI.
    webhook_url: str | None = None
    #: Alertmanager's group_wait/group_interval (how soon a new alert, and a change, is sent).
    group_wait: str = "30s"
    group_interval: str = "5m"
    #: job name (``ketenstroom-<component>``) -> ``host:port`` targets of the components
    targets: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {f"ketenstroom-{n}": (f"127.0.0.1:{p}",) for n, p in COMPONENT_PORTS.items()}
    )
    #: None: ``<run>/<stack>/monitoring``
    directory: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MonitoringConfig:
        """``KETENSTROOM_INFRA_PROMETHEUS_PORT``/``_ALERTMANAGER_PORT``/``_SCRAPE_INTERVAL``/
        ``_ALERT_WEBHOOK_URL`` and each component's own ``KETENSTROOM_<C>_METRICS_PORT``/``_HOST``."""
        rules = _path(environ, ENV_PREFIX + "PROMETHEUS_RULES")
        return cls(
            enabled=environ.get(ENV_PREFIX + "MONITORING", "") in ("1", "true"),
            prometheus_port=_int(environ, "PROMETHEUS_PORT", 9690),
            alertmanager_port=_int(environ, "ALERTMANAGER_PORT", 9691),
            scrape_interval=environ.get(ENV_PREFIX + "SCRAPE_INTERVAL") or "15s",
            evaluation_interval=environ.get(ENV_PREFIX + "EVALUATION_INTERVAL") or "30s",
            rules_file=rules,
            webhook_url=environ.get(ENV_PREFIX + "ALERT_WEBHOOK_URL") or None,
            targets={
                f"ketenstroom-{name}": (_monitor_target(environ, name.upper(), port),)
                for name, port in COMPONENT_PORTS.items()
            },
        )


@dataclass(frozen=True)
class StackConfig:
    """Where and how the local stack runs.

    ``nodes=1`` is the single combined broker/controller on ``kafka_port``/``kafka_controller_port``;
    ``nodes=3`` is a three-node KRaft cluster whose node *i* listens on ``i*10000 + kafka_port`` and
    ``i*10000 + kafka_controller_port`` (19092/19093, 29092/29093, 39092/39093 by default), so both
    stacks can run side by side. The registry and s3proxy are shared by both stacks: their state
    lives under ``<cache>/run/shared`` and whichever stack comes up first starts them.
    """

    cache_dir: Path
    nodes: int = 1
    #: TLS + SASL/SCRAM Kafka with ACLs, a registry that requires credentials to write (single node,
    #: its own registry and s3proxy, every port + SECURE_PORT_OFFSET); see devstack.security.
    secure: bool = False
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    registry_port: int = 8080
    registry_management_port: int = 9000
    s3_port: int = 8085
    #: Each broker's Prometheus JMX exporter agent (``/metrics``); node *i* of the cluster on
    #: ``i*10000 + kafka_metrics_port``, like the other Kafka ports. ``None``: ``kafka_port + 312``
    #: (9404 by default), so a second stack with its own Kafka port gets its own metrics port too.
    kafka_metrics_port: int | None = None
    #: ``infra up --with-monitoring``: also Prometheus and Alertmanager (Debian's packages) on loopback.
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    #: Java for Kafka and s3proxy (>= 17); ``None`` means detect.
    java_home: Path | None = None
    #: Java for Apicurio (>= 21); ``None`` means detect the newest >= 21.
    java21_home: Path | None = None
    #: ``$JAVA_HOME`` as it was when the config was read; a detection candidate after the explicit homes.
    system_java_home: Path | None = None
    #: Override Maven's local repository (``-Dmaven.repo.local``); ``None`` keeps the user's ``~/.m2``.
    maven_repo_local: Path | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    #: Seconds each service may take from spawn to healthy before up() gives up.
    start_timeout: float = 120.0
    #: Seconds down() waits after SIGTERM before it sends SIGKILL.
    stop_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.nodes not in (1, 3):
            raise InfraError(f"nodes={self.nodes} is not supported; expected 1 (single) or 3 (cluster3)")
        if self.secure and self.nodes != 1:
            raise InfraError("the secured stack is a single node; expected nodes=1 with secure=True")

    @classmethod
    def from_env(
        cls, nodes: int | None = None, environ: Mapping[str, str] | None = None, *, secure: bool = False
    ) -> StackConfig:
        """Read ``KETENSTROOM_CACHE_DIR`` and ``KETENSTROOM_INFRA_*`` once; ``nodes`` beats the env."""
        env = os.environ if environ is None else environ
        return cls(
            cache_dir=default_cache_dir(env),
            nodes=nodes if nodes is not None else _int(env, "NODES", 1),
            secure=secure,
            kafka_port=_int(env, "KAFKA_PORT", 9092),
            kafka_controller_port=_int(env, "KAFKA_CONTROLLER_PORT", 9093),
            registry_port=_int(env, "REGISTRY_PORT", 8080),
            registry_management_port=_int(env, "REGISTRY_MANAGEMENT_PORT", 9000),
            s3_port=_int(env, "S3_PORT", 8085),
            kafka_metrics_port=_int(env, "KAFKA_METRICS_PORT", 0) or None,
            monitoring=MonitoringConfig.from_env(env),
            java_home=_path(env, ENV_PREFIX + "JAVA_HOME"),
            java21_home=_path(env, ENV_PREFIX + "JAVA21_HOME"),
            system_java_home=_path(env, "JAVA_HOME"),
            maven_repo_local=_path(env, ENV_PREFIX + "MAVEN_REPO_LOCAL"),
            s3_access_key=env.get(ENV_PREFIX + "S3_ACCESS_KEY") or None,
            s3_secret_key=env.get(ENV_PREFIX + "S3_SECRET_KEY") or None,
            start_timeout=float(_int(env, "START_TIMEOUT", 120)),
            stop_timeout=float(_int(env, "STOP_TIMEOUT", 30)),
        )

    # -- derived locations -------------------------------------------------------------------------

    @property
    def stack_name(self) -> str:
        """``single``, ``cluster3`` or ``secure``: the directory name of this stack's Kafka state."""
        if self.secure:
            return "secure"
        return "single" if self.nodes == 1 else "cluster3"

    @property
    def dist_dir(self) -> Path:
        """Downloads, shared by every stack and kept by wipe()."""
        return self.cache_dir / "dist"

    @property
    def run_dir(self) -> Path:
        """This stack's Kafka state: configs, data, logs, pid files."""
        return self.cache_dir / "run" / self.stack_name

    @property
    def shared_run_dir(self) -> Path:
        """Registry and s3proxy state, shared by the single and the cluster stack (the secured stack
        keeps its own, in its run directory)."""
        if self.secure:
            return self.run_dir
        return self.cache_dir / "run" / SHARED_STACK

    @property
    def port_offset(self) -> int:
        return SECURE_PORT_OFFSET if self.secure else 0

    @property
    def registry_ports(self) -> tuple[int, int]:
        """(HTTP, management) port of this stack's registry."""
        return self.registry_port + self.port_offset, self.registry_management_port + self.port_offset

    @property
    def s3_port_effective(self) -> int:
        return self.s3_port + self.port_offset

    def kafka_metrics_port_of(self, node: int) -> int:
        """Port of node ``node``'s JMX exporter (``/metrics``)."""
        base = self.kafka_metrics_port or self.kafka_port + KAFKA_METRICS_OFFSET
        if self.nodes == 1:
            return base + self.port_offset
        return node * 10000 + base

    @property
    def monitoring_dir(self) -> Path:
        """Prometheus' and Alertmanager's state: ``<run>/<stack>/monitoring`` unless configured."""
        return self.monitoring.directory or self.run_dir / "monitoring"

    def kafka_ports(self, node: int) -> tuple[int, int]:
        """(client, controller) port of Kafka node ``node`` (1-based)."""
        if self.nodes == 1:
            return self.kafka_port + self.port_offset, self.kafka_controller_port + self.port_offset
        return node * 10000 + self.kafka_port, node * 10000 + self.kafka_controller_port

    @property
    def kafka_bootstrap(self) -> str:
        """Comma-separated client listeners of every node."""
        return ",".join(f"127.0.0.1:{self.kafka_ports(i)[0]}" for i in range(1, self.nodes + 1))


@dataclass(frozen=True)
class Endpoints:
    """How clients reach the running stack; the secret is kept out of repr()."""

    kafka_bootstrap: str
    registry_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    s3_bucket: str = S3_BUCKET
    s3_region: str = S3_REGION

    def as_env(self) -> dict[str, str]:
        """The ``KETENSTROOM_*`` variables the settings module reads, for child processes and tests."""
        return {
            "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "KETENSTROOM_REGISTRY_URL": self.registry_url,
            "KETENSTROOM_S3_ENDPOINT": self.s3_endpoint,
            "KETENSTROOM_S3_BUCKET": self.s3_bucket,
            "KETENSTROOM_S3_ACCESS_KEY_ID": self.s3_access_key,
            "KETENSTROOM_S3_SECRET_ACCESS_KEY": self.s3_secret_key,
            "KETENSTROOM_S3_REGION": self.s3_region,
        }


@dataclass(frozen=True)
class ServiceStatus:
    """One service as seen by status() (or reported by up()).

    ``startup_seconds`` is spawn-to-healthy of the current process, recorded by the up() that started
    it (so a later status() from another Python process still shows it); ``None`` if unknown.
    """

    name: str
    ports: tuple[int, ...]
    pid: int | None
    healthy: bool
    log_path: Path
    detail: str = ""
    startup_seconds: float | None = None


def listening_ports(config: StackConfig) -> list[int]:
    """Every port the local stacks of ``config``'s settings listen on: the single node, the 3-node
    cluster (node *i* at ``i*10000 + port``), the secured stack (``+ SECURE_PORT_OFFSET``), and the
    shared registry and s3proxy of each. Several lie in Linux's ephemeral range (32768-60999 by
    default), where a client socket of any process can take one by chance: ``infra reserve-ports``
    keeps them out of it."""
    kafka = [config.kafka_port, config.kafka_controller_port]
    kafka.append(config.kafka_metrics_port or config.kafka_port + KAFKA_METRICS_OFFSET)
    shared = [config.registry_port, config.registry_management_port, config.s3_port]
    ports = set(kafka + shared)
    ports |= {node * 10000 + port for node in (1, 2, 3) for port in kafka}
    ports |= {port + SECURE_PORT_OFFSET for port in kafka + shared}
    return sorted(p for p in ports if 0 < p < 65536)
