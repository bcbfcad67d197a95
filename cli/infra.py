"""``ketenstroom infra up|down|status|fetch|wipe|env``: the local stack without Docker."""

from __future__ import annotations

import shlex

import typer
from rich.console import Console
from rich.table import Table

from devstack import Stack, StackConfig
from ketenstroom.errors import InfraError

app = typer.Typer(
    help="Fetch and run Kafka (KRaft), Apicurio Registry and s3proxy on loopback.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
NODES = typer.Option(1, "--nodes", help="Kafka nodes: 1, or 3 (replication factor 3, min ISR 2).")


def _stack(nodes: int) -> Stack:
    if nodes not in (1, 3):
        raise typer.BadParameter("--nodes must be 1 or 3")
    return Stack(StackConfig.from_env(nodes=nodes))


def _fail(exc: InfraError) -> typer.Exit:
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
def up(nodes: int = NODES) -> None:
    """Fetch what is missing, start what is not running, wait until healthy. A no-op when all run."""
    stack = _stack(nodes)
    try:
        stack.up(progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except InfraError as exc:
        raise _fail(exc) from exc
    show_status(stack)


@app.command()
def down(nodes: int = NODES) -> None:
    """Stop only the processes this stack started."""
    try:
        stopped = _stack(nodes).down()
    except InfraError as exc:
        raise _fail(exc) from exc
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status(nodes: int = NODES) -> None:
    """Each service with its ports, pid, health and log file. Exit 1 if any is down."""
    if not show_status(_stack(nodes)):
        raise typer.Exit(1)


@app.command()
def fetch(nodes: int = NODES) -> None:
    """Download the services into the cache only."""
    try:
        timings = _stack(nodes).fetch(progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except InfraError as exc:
        raise _fail(exc) from exc
    for name, seconds in timings.items():
        console.print(f"{name}: {seconds:.1f} s")


@app.command()
def wipe(nodes: int = NODES) -> None:
    """Stop the stack and delete its data (topics, schemas, objects); downloads are kept."""
    _stack(nodes).wipe()
    console.print("stack stopped and its data removed")


@app.command()
def env(nodes: int = NODES) -> None:
    """Print `export` lines that point ketenstroom at this stack (includes the local S3 secret)."""
    for key, value in _stack(nodes).endpoints().as_env().items():
        print(f"export {key}={shlex.quote(value)}")
