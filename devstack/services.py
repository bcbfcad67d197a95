"""The three kinds of service: what each writes before it starts, its command line, its health.

A service is a directory (``<run>/<stack>/kafka-N`` or ``<run>/shared/{apicurio,s3proxy}``) holding
its generated config, data, ``service.log``, ``service.pid`` and ``startup.json``. Rendering is kept
in pure functions so unit tests can check ports and keys without a JVM.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from devstack import monitoring
from devstack.config import S3_BUCKET, StackConfig
from devstack.fetch import Layout, resource_text
from devstack.process import marker_arg, tail
from devstack.security import SCRAM_MECHANISM, Pki, registry_role, scram_args, write_private
from ketenstroom.access import SUPER_USERS
from ketenstroom.errors import InfraError, ServiceStartError

HEALTH_TIMEOUT = 2.0
COMPATIBILITY = "BACKWARD_TRANSITIVE"
SCHEMA_REGISTRY_JSON = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class Service:
    """One process of the stack, identified by the directory that holds its state."""

    name: str
    kind: str  # "kafka" | "apicurio" | "s3proxy" | "prometheus" | "alertmanager"
    directory: Path
    ports: tuple[int, ...]
    min_java: int  # 0: not a JVM
    node: int = 0  # Kafka node id, 0 for the others

    @property
    def log_path(self) -> Path:
        return self.directory / "service.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "service.pid"

    @property
    def startup_file(self) -> Path:
        return self.directory / "startup.json"


def kafka_services(config: StackConfig) -> list[Service]:
    """Each node: client, controller and JMX exporter (metrics) port."""
    return [
        Service(
            f"kafka-{i}",
            "kafka",
            config.run_dir / f"kafka-{i}",
            (*config.kafka_ports(i), config.kafka_metrics_port_of(i)),
            17,
            node=i,
        )
        for i in range(1, config.nodes + 1)
    ]


def monitoring_services(config: StackConfig) -> list[Service]:
    """Prometheus and Alertmanager of this stack (started only with --with-monitoring)."""
    mon, base = config.monitoring, config.monitoring_dir
    return [
        Service("prometheus", "prometheus", base / "prometheus", (mon.prometheus_port,), 0),
        Service("alertmanager", "alertmanager", base / "alertmanager", (mon.alertmanager_port,), 0),
    ]


def shared_services(config: StackConfig) -> list[Service]:
    return [
        Service("apicurio", "apicurio", config.shared_run_dir / "apicurio", config.registry_ports, 21),
        Service("s3proxy", "s3proxy", config.shared_run_dir / "s3proxy", (config.s3_port_effective,), 17),
    ]


# -- Kafka ------------------------------------------------------------------------------------------


def render_server_properties(config: StackConfig, node: int, data_dir: Path) -> str:
    """KRaft combined broker+controller properties for ``node`` (tuned small for a laptop)."""
    client, controller = config.kafka_ports(node)
    quorum = ",".join(f"127.0.0.1:{config.kafka_ports(i)[1]}" for i in range(1, config.nodes + 1))
    rf, isr = (1, 1) if config.nodes == 1 else (3, 2)
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": node,
        "controller.quorum.bootstrap.servers": quorum,
        "listeners": f"PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": 1,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "num.network.threads": 2,
        "num.io.threads": 4 if config.nodes == 1 else 2,
        "background.threads": 4 if config.nodes == 1 else 2,
        "num.recovery.threads.per.data.dir": 1,
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.num.partitions": 4,
        "auto.create.topics.enable": "true",
        # retention is enforced within a second, not every 5 minutes: a test can show what it deletes
        "log.retention.check.interval.ms": 1000,
    }
    if config.nodes == 3:
        # a fault-tolerant cluster: every topic on all three nodes, a write acknowledged by acks=all is on
        # at least two of them, and a replica that missed writes never becomes leader (the Kafka 4.x
        # default, stated so that `topics --check` and a reader of this file need not know it)
        props |= {
            "default.replication.factor": 3,
            "min.insync.replicas": 2,
            "unclean.leader.election.enable": "false",
            "num.replica.fetchers": 1,
        }
    if config.secure:
        props |= secure_properties(config, client, controller)
    return "".join(f"{key}={value}\n" for key, value in props.items())


def secure_properties(config: StackConfig, client: int, controller: int) -> dict[str, str | int]:
    """TLS + SASL/SCRAM-SHA-512 for clients and between brokers, mutual TLS on the controller listener
    (KRaft has no controller-to-controller SCRAM), the StandardAuthorizer denying what is not granted,
    and only ``admin`` and ``broker`` as super users. The broker's SCRAM password is read from a file
    by Kafka's FileConfigProvider, so no secret sits in server.properties."""
    pki = pki_of(config)
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "config.providers": "file",
        "config.providers.file.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" '
            f'password="${{file:{pki.directory / "broker-jaas.properties"}:password}}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.broker_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca_file),
        "ssl.endpoint.identification.algorithm": "https",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([a-z0-9-]+).*$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
        "auto.create.topics.enable": "false",
    }


def secure_client_env(config: StackConfig, principal: str) -> dict[str, str]:
    """Settings of a client authenticating as ``principal``: password from its 0600 file."""
    pki = pki_of(config)
    if not pki.password_file(principal).is_file():
        raise InfraError(
            f"no credentials for principal {principal!r} on the secured stack ({pki.directory}); "
            "known: " + ", ".join(sorted(pki.passwords()))
        )
    env = {
        "KETENSTROOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KETENSTROOM_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "KETENSTROOM_KAFKA_SASL_USERNAME": principal,
        "KETENSTROOM_KAFKA_SASL_PASSWORD_FILE": str(pki.password_file(principal)),
        "KETENSTROOM_KAFKA_SSL_CA_LOCATION": str(pki.ca_file),
        "KETENSTROOM_REGISTRY_PASSWORD_FILE": str(pki.password_file(principal)),
        "KETENSTROOM_REGISTRY_USERNAME": principal,
    }
    return env


def pki_of(config: StackConfig) -> Pki:
    return Pki(config.run_dir / "pki")


def admin_librdkafka(config: StackConfig, port: int) -> dict[str, str | int | float | bool]:
    """librdkafka settings of the stack's own admin client (health checks, topics, ACLs)."""
    conf: dict[str, str | int | float | bool] = {"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0}
    if config.secure:
        pki = pki_of(config)
        conf |= {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": "admin",
            "sasl.password": pki.password_file("admin").read_text(),
            "ssl.ca.location": str(pki.ca_file),
        }
    return conf


def kafka_heap(config: StackConfig) -> list[str]:
    if config.nodes == 1:
        return ["-Xms512m", "-Xmx1g"]
    return ["-Xms384m", "-Xmx768m", "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1"]


def kafka_uuid() -> str:
    """A Kafka ``Uuid`` string (URL-safe base64 of 16 random bytes, unpadded), like ``random-uuid``.

    Generated here rather than with ``StorageTool random-uuid`` to save a JVM start per id. Kafka
    rejects ids starting with '-' on the command line and reserves the all-zero and 0..01 ids.
    """
    while True:
        raw = secrets.token_bytes(16)
        text = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not text.startswith("-") and raw not in (bytes(16), bytes(15) + b"\x01"):
            return text


def cluster_identity(config: StackConfig) -> dict[str, str]:
    """Cluster id and per-node directory ids, created once per run dir and reused for every format.

    The controller ports are recorded too: KRaft writes the voter endpoints into the metadata log at
    format time, so a stack formatted for other ports must be wiped, not silently restarted.
    """
    path = config.run_dir / "cluster.json"
    ports = ",".join(str(config.kafka_ports(i)[1]) for i in range(1, config.nodes + 1))
    if path.is_file():
        stored: dict[str, str] = json.loads(path.read_text())
        if stored.get("controller_ports", ports) != ports:
            raise InfraError(
                f"Kafka storage under {config.run_dir} was formatted for controller port(s) "
                f"{stored['controller_ports']}, but the config now asks for {ports}; expected the same "
                "ports. Restore the KETENSTROOM_INFRA_*_PORT settings, or wipe this stack's data "
                "(`ketenstroom infra wipe` / Stack.wipe())"
            )
        return stored
    ident = {"cluster_id": kafka_uuid(), "controller_ports": ports}
    ident |= {str(i): kafka_uuid() for i in range(1, config.nodes + 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ident, indent=2) + "\n")
    return ident


def initial_controllers(config: StackConfig, ident: dict[str, str]) -> str:
    """``id@host:port:directory-id`` list for ``StorageTool format --initial-controllers``."""
    return ",".join(
        f"{i}@127.0.0.1:{config.kafka_ports(i)[1]}:{ident[str(i)]}" for i in range(1, config.nodes + 1)
    )


def prepare_kafka(config: StackConfig, svc: Service) -> None:
    """Write server.properties and the log4j2 configs (re-rendered every start: ports may change)."""
    if config.secure:
        ensure_secure_keys(config)
    (svc.directory / "data").mkdir(parents=True, exist_ok=True)
    (svc.directory / "logs").mkdir(exist_ok=True)
    (svc.directory / "server.properties").write_text(
        render_server_properties(config, svc.node, svc.directory / "data")
    )
    (svc.directory / "log4j2.yaml").write_text(resource_text("log4j2.yaml"))
    (svc.directory / "tools-log4j2.yaml").write_text(resource_text("tools-log4j2.yaml"))
    (svc.directory / "jmx-exporter.yaml").write_text(resource_text("jmx-exporter.yaml"))


def format_kafka(config: StackConfig, svcs: list[Service], java: Path, layout: Layout) -> None:
    """Format the storage of nodes that have no ``meta.properties`` yet (in parallel: one JVM each)."""
    ident = cluster_identity(config)
    todo = [s for s in svcs if not (s.directory / "data" / "meta.properties").is_file()]
    running: list[tuple[Service, subprocess.Popen[bytes], Path]] = []
    for svc in todo:
        argv = [
            str(java), "-Xmx256m", f"-Dlog4j2.configurationFile={svc.directory / 'tools-log4j2.yaml'}",
            "-cp", f"{layout.kafka_lib}/*", "kafka.tools.StorageTool", "format",
            "-t", ident["cluster_id"], "-c", str(svc.directory / "server.properties"),
        ]  # fmt: skip
        if config.nodes == 1:
            argv.append("--standalone")
        else:
            argv += ["--initial-controllers", initial_controllers(config, ident)]
        if config.secure:  # SCRAM users go into the bootstrap checkpoint; via a 0600 @argfile, not argv
            argfile = pki_of(config).directory / "format-scram.args"
            write_private(argfile, "\n".join(scram_args(pki_of(config).passwords())) + "\n")
            argv.append(f"@{argfile}")
        log = svc.directory / "format.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        running.append((svc, proc, log))
    for svc, proc, log in running:
        if proc.wait(timeout=120) != 0:
            raise ServiceStartError(
                f"formatting {svc.name} storage failed (exit {proc.returncode}); expected exit 0. "
                f"Log {log}:\n{tail(log)}"
            )


def kafka_argv(config: StackConfig, svc: Service, java: Path, layout: Layout) -> list[str]:
    return [
        str(java), *kafka_heap(config), "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true", marker_arg(svc.directory),
        f"-Dkafka.logs.dir={svc.directory / 'logs'}",
        f"-Dlog4j2.configurationFile={svc.directory / 'log4j2.yaml'}",
        jmx_agent_arg(config, svc, layout),
        "-cp", f"{layout.kafka_lib}/*", "kafka.Kafka", str(svc.directory / "server.properties"),
    ]  # fmt: skip


def jmx_agent_arg(config: StackConfig, svc: Service, layout: Layout) -> str:
    """The Prometheus JMX exporter as a java agent: ``/metrics`` on loopback at the node's metrics
    port, with the broker-health rules of ``jmx-exporter.yaml``."""
    port = config.kafka_metrics_port_of(svc.node)
    return f"-javaagent:{layout.jmx_exporter_jar}=127.0.0.1:{port}:{svc.directory / 'jmx-exporter.yaml'}"


def kafka_health(config: StackConfig, svc: Service) -> tuple[bool, str]:
    """Metadata via this node's own listener lists all ``nodes`` brokers."""
    admin = AdminClient(admin_librdkafka(config, svc.ports[0]))
    try:
        metadata = admin.list_topics(timeout=HEALTH_TIMEOUT)
    except Exception as exc:  # KafkaException and friends: not reachable (yet)
        return False, f"metadata request failed: {exc}"
    brokers = len(metadata.brokers)
    if brokers != config.nodes:
        return False, f"{brokers} of {config.nodes} brokers registered"
    return True, f"{brokers} broker(s) in cluster metadata"


# -- Apicurio Registry ------------------------------------------------------------------------------


def ensure_secure_keys(config: StackConfig) -> Pki:
    """CA, broker certificate and every principal's password (catalogue partners included)."""
    from ketenstroom.catalogue import catalogue_at
    from ketenstroom.settings import CatalogueSettings

    pki = pki_of(config)
    passwords = pki.ensure(catalogue_at(CatalogueSettings().dir).names)
    write_private(pki.directory / "broker-jaas.properties", f"password={passwords['broker']}\n")
    return pki


def render_apicurio_auth(passwords: dict[str, str]) -> str:
    """Apicurio without an OIDC server: Quarkus HTTP Basic against embedded users (the extension ships
    in 3.3.3), role-based authorization (sr-admin/sr-developer/sr-readonly) and owner-only writes, so a
    partner may change only the subjects it registered. Reads need credentials too."""
    lines = {
        "quarkus.oidc.tenant-enabled": "false",
        "quarkus.http.auth.basic": "true",
        "apicurio.authn.basic-client-credentials.enabled": "false",
        "apicurio.auth.role-based-authorization": "true",
        "apicurio.auth.owner-only-authorization": "true",
        "apicurio.auth.anonymous-read-access.enabled": "false",
        "quarkus.security.users.embedded.enabled": "true",
        "quarkus.security.users.embedded.plain-text": "true",
    }
    for name, password in passwords.items():
        if name == "broker":
            continue
        lines[f"quarkus.security.users.embedded.users.{name}"] = password
        lines[f"quarkus.security.users.embedded.roles.{name}"] = registry_role(name)
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def prepare_apicurio(config: StackConfig, svc: Service) -> None:
    """Quarkus reads ``config/application.properties`` under its working directory: the secured
    registry's users and passwords go there (0600), not on the command line."""
    path = svc.directory / "config" / "application.properties"
    if config.secure:
        write_private(path, render_apicurio_auth(ensure_secure_keys(config).passwords()))
    else:
        path.unlink(missing_ok=True)


def apicurio_argv(config: StackConfig, svc: Service, java: Path, layout: Layout) -> list[str]:
    http, management = config.registry_ports
    return [
        str(java), "-Xms128m", "-Xmx512m", marker_arg(svc.directory),
        "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={http}",
        "-Dquarkus.management.host=127.0.0.1",
        f"-Dquarkus.management.port={management}",
        f"-Dapicurio.datasource.url=jdbc:h2:file:{svc.directory / 'db'}",
        "-jar", str(layout.apicurio_jar),
    ]  # fmt: skip


def registry_url(config: StackConfig) -> str:
    return f"http://127.0.0.1:{config.registry_ports[0]}/apis/ccompat/v7"


def registry_admin_auth(config: StackConfig) -> tuple[str, str] | None:
    """HTTP Basic credentials of the registry's admin on the secured stack, else None."""
    if not config.secure:
        return None
    return "admin", pki_of(config).password_file("admin").read_text()


def apicurio_health(config: StackConfig) -> tuple[bool, str]:
    try:
        response = httpx.get(
            f"{registry_url(config)}/subjects", timeout=HEALTH_TIMEOUT, auth=registry_admin_auth(config)
        )
    except httpx.HTTPError as exc:
        return False, f"GET /subjects failed: {exc}"
    if response.status_code != 200:
        return False, f"GET /subjects returned {response.status_code}"
    return True, f"{len(response.json())} subject(s)"


def ensure_compatibility(config: StackConfig) -> None:
    """Set global compatibility to BACKWARD_TRANSITIVE explicitly (not trusting the default) and check."""
    url = f"{registry_url(config)}/config"
    headers = {"Content-Type": SCHEMA_REGISTRY_JSON}
    try:
        auth = registry_admin_auth(config)
        httpx.put(
            url, json={"compatibility": COMPATIBILITY}, headers=headers, timeout=10, auth=auth
        ).raise_for_status()
        level = httpx.get(url, timeout=10, auth=auth).raise_for_status().json().get("compatibilityLevel")
    except httpx.HTTPError as exc:
        raise InfraError(f"setting registry compatibility at {url} failed: {exc}") from exc
    if level != COMPATIBILITY:
        raise InfraError(f"registry at {url} reports compatibility {level!r}; expected {COMPATIBILITY}")


# -- s3proxy ----------------------------------------------------------------------------------------


def s3_credentials(config: StackConfig) -> tuple[str, str]:
    """(access key, secret): from the environment if both are given, else generated once and kept in
    ``<shared>/s3proxy/credentials.json`` (mode 0600) so every process sees the same pair."""
    if config.s3_access_key and config.s3_secret_key:
        return config.s3_access_key, config.s3_secret_key
    path = config.shared_run_dir / "s3proxy" / "credentials.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        return str(stored["access_key"]), str(stored["secret_key"])
    access, secret = f"ketenstroom-{secrets.token_hex(6)}", secrets.token_urlsafe(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps({"access_key": access, "secret_key": secret}) + "\n")
    return access, secret


def render_s3proxy_conf(config: StackConfig, data_dir: Path, access: str, secret: str) -> str:
    return (
        f"s3proxy.endpoint=http://127.0.0.1:{config.s3_port_effective}\n"
        "s3proxy.authorization=aws-v2-or-v4\n"
        f"s3proxy.identity={access}\n"
        f"s3proxy.credential={secret}\n"
        "jclouds.provider=filesystem-nio2\n"
        f"jclouds.filesystem.basedir={data_dir}\n"
    )


def prepare_s3proxy(config: StackConfig, svc: Service) -> None:
    """Write the config (0600: it holds the secret) and create the bucket as a top-level directory."""
    data = svc.directory / "data"
    (data / S3_BUCKET).mkdir(parents=True, exist_ok=True)
    access, secret = s3_credentials(config)
    write_private(svc.directory / "s3proxy.conf", render_s3proxy_conf(config, data, access, secret))


def s3proxy_argv(config: StackConfig, svc: Service, java: Path, layout: Layout) -> list[str]:
    return [
        str(java), "-Xmx256m", marker_arg(svc.directory),
        "-jar", str(layout.s3proxy_jar), "--properties", str(svc.directory / "s3proxy.conf"),
    ]  # fmt: skip


def s3proxy_health(config: StackConfig) -> tuple[bool, str]:
    """An anonymous GET / is refused with 403 by a live s3proxy: enough to know it serves S3."""
    try:
        response = httpx.get(f"http://127.0.0.1:{config.s3_port_effective}/", timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError as exc:
        return False, f"GET / failed: {exc}"
    if response.status_code != 403:
        return False, f"GET / returned {response.status_code}, expected 403 (anonymous access denied)"
    return True, f"bucket {S3_BUCKET}"


def health(config: StackConfig, svc: Service) -> tuple[bool, str]:
    """(healthy, detail) of a service, asking the service itself."""
    if svc.kind == "kafka":
        return kafka_health(config, svc)
    if svc.kind == "apicurio":
        return apicurio_health(config)
    if svc.kind in ("prometheus", "alertmanager"):
        return monitoring.ready(svc.ports[0], HEALTH_TIMEOUT)
    return s3proxy_health(config)


def argv_for(config: StackConfig, svc: Service, java: Path, layout: Layout) -> list[str]:
    """Render what the service needs on disk and return its command line."""
    svc.directory.mkdir(parents=True, exist_ok=True)
    if svc.kind == "kafka":
        prepare_kafka(config, svc)
        return kafka_argv(config, svc, java, layout)
    if svc.kind == "apicurio":
        prepare_apicurio(config, svc)
        return apicurio_argv(config, svc, java, layout)
    if svc.kind == "prometheus":
        monitoring.prepare(config, svc.directory, svc.kind)
        return monitoring.prometheus_argv(config, svc.directory)
    if svc.kind == "alertmanager":
        monitoring.prepare(config, svc.directory, svc.kind)
        return monitoring.alertmanager_argv(config, svc.directory)
    prepare_s3proxy(config, svc)
    return s3proxy_argv(config, svc, java, layout)
