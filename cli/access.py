"""``ketenstroom access apply|show``: Kafka rights derived from the chain catalogue."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from cli.catalogue import load
from ketenstroom.access import Grant, plan
from ketenstroom.adapters.acls import AclReport
from ketenstroom.adapters.acls import apply as apply_acls
from ketenstroom.contract import Topics
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import KafkaSettings, TopicSettings

app = typer.Typer(
    help="Who may do what on Kafka: one principal per partner and per component, from the catalogue.",
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def grants(partners: list[str] | None = None) -> list[Grant]:
    return plan(load(), Topics(TopicSettings().prefix), partners)


def grant(partners: list[str] | None = None) -> AclReport:
    """Apply the plan (or only these partners' part of it) as the configured (admin) principal."""
    chosen = grants(partners)
    if partners is not None:
        chosen = [g for g in chosen if g.principal in partners]
    return apply_acls(KafkaSettings(), chosen)


def print_report(report: AclReport) -> None:
    for g in report.created:
        out.print(f"created  {g}")
    out.print(f"{len(report.created)} ACL(s) created, {len(report.present)} already present")
    for extra in report.extra:
        out.print(f"[yellow]not in the plan (left alone):[/yellow] {extra}")


@app.command("apply")
def apply_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
) -> None:
    """Create every ACL the catalogue implies that the cluster lacks (idempotent; never deletes)."""
    try:
        if dry_run:
            for g in grants():
                out.print(f"would grant  {g}")
            return
        print_report(grant())
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command("show")
def show() -> None:
    """Who may do what: per principal, the operations on each resource."""
    try:
        rows = grants()
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table("principal", "resource", "name", "may")
    merged: dict[tuple[str, str, str], list[str]] = {}
    for g in rows:
        name = f"{g.name}*" if g.pattern == "prefixed" else g.name
        merged.setdefault((g.principal, g.resource, name), []).append(g.operation)
    for (principal, resource, name), ops in merged.items():
        table.add_row(principal, resource, name, ", ".join(ops))
    out.print(table)
    out.print("Super users: admin, broker. Everything not listed is refused.")
