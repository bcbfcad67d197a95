"""``ketenstroom infra up|down|status|fetch|wipe|env``: the local stack without Docker."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from devstack import Stack, StackConfig
from devstack.config import listening_ports
from ketenstroom.errors import InfraError, KetenstroomError
from ketenstroom.settings import KafkaSettings

app = typer.Typer(
    help="Fetch and run Kafka (KRaft), Apicurio Registry and s3proxy on loopback.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
NODES = typer.Option(1, "--nodes", help="Kafka nodes: 1, or 3 (replication factor 3, min ISR 2).")
SECURE = typer.Option(
    False,
    "--secure",
    help="The secured stack: TLS + SASL/SCRAM Kafka with ACLs from the catalogue, a registry that "
    "requires credentials, signed S3; every port + 40000, beside the plain stack.",
)


MONITORING = typer.Option(
    False,
    "--with-monitoring",
    help="Also Prometheus and Alertmanager (Debian's packages) on loopback "
    "(KETENSTROOM_INFRA_PROMETHEUS_PORT, default 9690; _ALERTMANAGER_PORT, 9691), scraping the "
    "processor, sink, monitor and every broker, "
    "with ops/prometheus/rules.yml.",
)


def _stack(nodes: int, secure: bool = False, monitoring: bool = False) -> Stack:
    if nodes not in (1, 3):
        raise typer.BadParameter("--nodes must be 1 or 3")
    try:
        config = StackConfig.from_env(nodes=nodes, secure=secure)
        if monitoring:
            enabled = dataclasses.replace(config.monitoring, enabled=True)
            config = dataclasses.replace(config, monitoring=enabled)
        return Stack(config)
    except InfraError as exc:
        raise _fail(exc) from exc


def _fail(exc: KetenstroomError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def show_status(stack: Stack) -> bool:
    table = Table(title="ketenstroom local stack")
    for column in ("service", "ports", "pid", "health", "started in"):
        table.add_column(column)
    table.add_column("log", overflow="fold")
    healthy = True
    for s in stack.status():
        healthy &= s.healthy
        table.add_row(
            s.name,
            ",".join(map(str, s.ports)),
            str(s.pid or "-"),
            "[green]healthy[/green]" if s.healthy else f"[red]down[/red] {s.detail}",
            f"{s.startup_seconds:.1f} s" if s.startup_seconds else "-",
            str(s.log_path),
        )
    Console().print(table)
    return healthy


@app.command()
def up(nodes: int = NODES, secure: bool = SECURE, with_monitoring: bool = MONITORING) -> None:
    """Fetch what is missing, start what is not running, wait until healthy. A no-op when all run."""
    stack = _stack(nodes, secure, with_monitoring)
    try:
        stack.up(progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
        if secure:
            provision(stack)
    except (InfraError, KetenstroomError) as exc:
        raise _fail(exc) from exc
    show_status(stack)
    if with_monitoring:
        mon = stack.config.monitoring
        console.print(
            f"Prometheus http://127.0.0.1:{mon.prometheus_port}/ (alerts: /alerts), "
            f"Alertmanager http://127.0.0.1:{mon.alertmanager_port}/; "
            "Grafana users import ops/grafana/ketenstroom.json"
        )


def ensure_scram_users(kafka: KafkaSettings, stack: Stack) -> list[str]:
    """SCRAM credentials for principals that joined after the storage was formatted (a new partner)."""
    from concurrent.futures import Future

    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._scram import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from devstack.services import ensure_secure_keys

    pki = ensure_secure_keys(stack.config)  # a password for every catalogue partner, new ones too
    admin = AdminClient(kafka.librdkafka())
    described = admin.describe_user_scram_credentials()  # no names: one future for every user
    existing = set(described.result() if isinstance(described, Future) else described)
    missing = {u: p for u, p in pki.passwords().items() if u not in existing}
    if missing:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        alterations = [UserScramCredentialUpsertion(u, info, p.encode()) for u, p in missing.items()]
        for future in admin.alter_user_scram_credentials(alterations).values():  # type: ignore[arg-type]
            future.result()
    return sorted(missing)


def provision(stack: Stack) -> None:
    """As admin on the secured stack: create the catalogue's topics, apply the ACLs derived from it."""
    from cli.access import grants
    from ketenstroom.adapters.acls import apply
    from ketenstroom.adapters.kafka import ensure_topics
    from ketenstroom.catalogue import catalogue_at
    from ketenstroom.contract import Topics
    from ketenstroom.contract.deliveries import DELIVERIES_RETENTION_DAYS
    from ketenstroom.settings import CatalogueSettings, TopicSettings

    env = stack.client_env("admin")
    kafka = KafkaSettings.model_validate(
        {k.removeprefix("KETENSTROOM_KAFKA_").lower(): v for k, v in env.items() if "_KAFKA_" in k}
    )
    added = ensure_scram_users(kafka, stack)
    if added:
        console.print(f"[dim]SCRAM users added for: {', '.join(added)}[/dim]")
    topics = Topics()
    for partner in catalogue_at(CatalogueSettings().dir).partners.values():
        names = [topics.raw(partner.name), topics.dlq(partner.name)]
        ensure_topics(kafka, names, partitions=partner.topics.partitions)
    ensure_topics(kafka, [topics.curated], partitions=3)
    # each delivery's receipt (publish writes it; `ketenstroom status` and the monitor read it)
    ensure_topics(
        kafka,
        [topics.deliveries],
        partitions=1,
        config=TopicSettings().retention().raw(DELIVERIES_RETENTION_DAYS),
    )
    report = apply(kafka, grants())
    console.print(f"[dim]ACLs: {len(report.created)} created, {len(report.present)} already present[/dim]")


@app.command()
def down(nodes: int = NODES, secure: bool = SECURE) -> None:
    """Stop only the processes this stack started."""
    try:
        stopped = _stack(nodes, secure).down()
    except InfraError as exc:
        raise _fail(exc) from exc
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command("stop")
def stop_one(
    service: str = typer.Argument(..., help="kafka-1 (kafka-2, kafka-3 in cluster3), apicurio or s3proxy"),
    nodes: int = NODES,
    secure: bool = SECURE,
) -> None:
    """Stop one service (an outage rehearsal); `infra up` starts it again with its data."""
    try:
        stopped = _stack(nodes, secure).stop_service(service)
    except InfraError as exc:
        raise _fail(exc) from exc
    console.print(f"stopped {service}" if stopped else f"{service} was not running")


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


@app.command("reserve-ports")
def reserve_ports() -> None:
    """Keep the stacks' ports out of Linux's ephemeral range (root only; otherwise prints the sysctl).

    The 3-node cluster's third node and the secured stack listen inside 32768-60999, where any client
    socket can take a port by chance and a broker then fails to start with "Address already in use"
    (it happened in a CI run). Reserved ports are never handed out as ephemeral ports."""
    wanted = listening_ports(StackConfig.from_env())
    try:
        current = RESERVED_PORTS.read_text().strip()
    except OSError:
        console.print("no /proc/sys/net/ipv4/ip_local_reserved_ports here: nothing to reserve")
        return
    ranges = ",".join([current, *map(str, wanted)] if current else map(str, wanted))
    try:
        RESERVED_PORTS.write_text(ranges + "\n")
    except OSError:
        console.print(
            f"not allowed to reserve ports; as root: sysctl -w net.ipv4.ip_local_reserved_ports={ranges}"
        )
        return
    console.print(f"reserved from ephemeral use: {RESERVED_PORTS.read_text().strip()}")


@app.command()
def status(nodes: int = NODES, secure: bool = SECURE) -> None:
    """Each service with its ports, pid, health and log file. Exit 1 if any is down."""
    if not show_status(_stack(nodes, secure)):
        raise typer.Exit(1)


@app.command()
def fetch(nodes: int = NODES, secure: bool = SECURE) -> None:
    """Download the services into the cache only."""
    try:
        timings = _stack(nodes, secure).fetch(progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except InfraError as exc:
        raise _fail(exc) from exc
    for name, seconds in timings.items():
        console.print(f"{name}: {seconds:.1f} s")


@app.command()
def wipe(nodes: int = NODES, secure: bool = SECURE) -> None:
    """Stop the stack and delete its data (topics, schemas, objects); downloads are kept."""
    _stack(nodes, secure).wipe()
    console.print("stack stopped and its data removed")


@app.command(
    "kafka-tool",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def kafka_tool(
    name: str = typer.Argument(..., help="kafka-console-consumer, kafka-consumer-groups, kafka-topics, ..."),
    args: list[str] | None = typer.Argument(None, help="Passed to the tool as they are."),
    nodes: int = NODES,
) -> None:
    """Run one of Kafka's command-line tools against this stack; its exit code is ours.

    Adds --bootstrap-server for this stack unless ARGS name one. Options for the tool come after NAME,
    e.g. `ketenstroom infra kafka-tool kafka-consumer-groups --describe --all-groups`.
    """
    try:
        argv = _stack(nodes).kafka_tool(
            name, list(args or []), progress=lambda m: console.print(f"[dim]{m}[/dim]")
        )
    except InfraError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(subprocess.run(argv, check=False).returncode)  # our own java and classpath


@app.command()
def env(
    nodes: int = NODES,
    secure: bool = SECURE,
    principal: str = typer.Option(
        "admin", "--as", help="Secured stack: the principal whose CA and password files to point at."
    ),
) -> None:
    """Print `export` lines that point ketenstroom at this stack (includes the local S3 secret)."""
    stack = _stack(nodes, secure)
    try:
        variables = stack.client_env(principal)
    except InfraError as exc:
        raise _fail(exc) from exc
    for key, value in variables.items():
        print(f"export {key}={shlex.quote(value)}")
