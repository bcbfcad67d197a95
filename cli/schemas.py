"""``ketenstroom schemas register|check``: schema governance against git history and the registry."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics, load_schemas
from ketenstroom.contract.compat import check_history
from ketenstroom.contract.schemas import EventSchema
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import REPO_ROOT, CatalogueSettings, RegistrySettings, TopicSettings

app = typer.Typer(
    help="Register the contract in the registry, or check that it evolves compatibly.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
LEVEL = "BACKWARD_TRANSITIVE"


def topic_for(schema: EventSchema, topics: Topics) -> str:
    return topics.curated if schema.group == "curated" else topics.raw(schema.group)


def register_group(group: str | None = None) -> Table:
    """Register the schemas of one partner (or all), each subject BACKWARD_TRANSITIVE; a table of ids."""
    topics = Topics(TopicSettings().prefix)
    registry = Registry(RegistrySettings())
    table = Table("subject", "id")
    for schema in load_schemas(CatalogueSettings().schema_dir):
        if group is not None and schema.group != group:
            continue
        subject = schema.subject(topic_for(schema, topics))
        registry.set_compatibility(LEVEL, subject)
        table.add_row(subject, str(registry.register(subject, schema)))
    return table


@app.command()
def register() -> None:
    """Register every schema (TopicRecordNameStrategy) and set BACKWARD_TRANSITIVE on each subject."""
    try:
        table = register_group()
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(table)


@app.command()
def check(
    registry_too: bool = typer.Option(
        False, "--registry", help="Also ask the registry (subjects that exist)."
    ),
    samples: int = typer.Option(64, help="Random records written with each old version."),
) -> None:
    """Every schema must read data written with every earlier committed version of itself."""
    schemas = load_schemas(CatalogueSettings().schema_dir)
    problems = [str(p) for p in check_history(schemas, REPO_ROOT, samples=samples)]
    if registry_too:
        topics = Topics(TopicSettings().prefix)
        registry = Registry(RegistrySettings())
        for schema in schemas:
            subject = schema.subject(topic_for(schema, topics))
            if registry.compatible(subject, schema) is False:
                problems.append(f"{schema.fullname}: the registry refuses it under {subject} ({LEVEL})")
    for problem in problems:
        console.print(f"[red]incompatible:[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(schemas.events)} schemas evolve compatibly with their history")
