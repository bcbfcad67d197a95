"""``ketenstroom process``, ``ketenstroom dlq list|replay`` and ``ketenstroom scan``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.catalogue import partners_or_all
from cli.signals import stop_on_signals
from ketenstroom.adapters.kafka import end_offsets
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.preflight import require_broker
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.contract.scanner import scan_all
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import (
    CatalogueSettings,
    KafkaSettings,
    ProcessorSettings,
    PseudonymSettings,
    RegistrySettings,
    S3Settings,
    TopicSettings,
)

console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
out = Console(soft_wrap=True)
dlq_app = typer.Typer(
    help="Dead letters: what the processor could not process, by reason; replay after a fix.",
    no_args_is_help=True,
)


def _topics() -> Topics:
    return Topics(TopicSettings().prefix)


def _fail(exc: KetenstroomError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def process(
    partner: list[str] = typer.Option(
        [],
        "--partner",
        "-p",
        help="Partners to consume (repeatable; default: every partner in the catalogue).",
    ),
    app_id: str | None = typer.Option(
        None,
        help="Consumer group and state namespace (default: KETENSTROOM_PROCESSOR_APP_ID, else "
        f"{ProcessorSettings.model_fields['app_id'].default}).",
    ),
    instance_id: str | None = typer.Option(
        None,
        help="Stable per running instance: a restart fences its predecessor and takes its partitions "
        "back at once (static group membership) (default: KETENSTROOM_PROCESSOR_INSTANCE_ID, else 0).",
    ),
    until_caught_up: bool = typer.Option(False, help="Stop once the input as of start-up is processed."),
    metrics_port: int | None = typer.Option(None, help="Serve /metrics and /health here (0: off)."),
) -> None:
    """Pseudonymise and normalise raw.<partner> into curated.chain-events, exactly once; the rest to
    dlq.<partner>."""

    overrides = {"app_id": app_id, "instance_id": instance_id, "metrics_port": metrics_port}
    kafka, topics = KafkaSettings(), _topics()
    partner = partners_or_all(partner)
    try:
        # the constructor (not model_validate) so the environment still applies to what is not given;
        # mypy cannot match **dict[str, object] against the fields' own types
        settings = ProcessorSettings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        require_broker(kafka)  # an unreachable cluster fails here, within KETENSTROOM_KAFKA_CONNECT_TIMEOUT_S
        stop_at = (
            end_offsets(kafka, [topics.raw(p) for p in partner], group_id=settings.app_id)
            if until_caught_up
            else None
        )
        result = _run(kafka, topics, partner, settings, stop_at)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(json.dumps(result, sort_keys=True))


def _run(
    kafka: KafkaSettings,
    topics: Topics,
    partners: list[str],
    settings: Any,
    stop_at: dict[tuple[str, int], int] | None,
) -> dict[str, Any]:
    from ketenstroom.adapters.observability import ObservabilityServer
    from processors.build import build_transformer
    from processors.metrics import ProcessorMetrics
    from processors.runner import TransactionalProcessor

    stop = stop_on_signals()
    metrics = ProcessorMetrics()
    with Registry(RegistrySettings()) as registry:
        transformer = build_transformer(
            registry=registry, paths=CatalogueSettings(), pseudonym=PseudonymSettings(), topics=topics
        )
        proc = TransactionalProcessor(
            kafka=kafka,
            topics=topics,
            partners=partners,
            transformer=transformer,
            settings=settings,
            metrics=metrics,
        )
        server = None
        if settings.metrics_port:
            server = ObservabilityServer(
                metrics.registry,
                lambda: (proc.healthy, {"app_id": settings.app_id}),
                host=settings.metrics_host,
                port=settings.metrics_port,
            ).start()
        try:
            stats = proc.run(should_stop=stop.is_set, stop_at=stop_at)
        finally:
            if server is not None:
                server.stop()
    return {
        "records_in": stats.records_in,
        "curated": stats.curated,
        "dead_lettered": stats.dead,
        "duplicates": stats.duplicates,
        "reconciles": stats.reconciles(),
    }


DLQ_COLUMNS = (
    ("partner", "partner"),
    ("reason", "reason"),
    ("stage", "stage"),
    ("state", "state"),
    ("events", "events"),
    ("letters", "letters"),
    ("first_seen", "first seen"),
    ("last_seen", "last seen"),
    ("example_error", "example error"),
)


@dlq_app.command("list")
def dlq_list(
    partner: str = typer.Option(..., "--partner", "-p"),
    everything: bool = typer.Option(
        False, "--all", help="Also events resolved by a replay (curated, or curated before)."
    ),
    as_json: bool = typer.Option(False, "--json", help="The same rows as JSON, for scripts."),
) -> None:
    """Dead-lettered events of one partner by reason, stage and state: open ones (dead, or replayed and
    not yet processed) unless --all. Never their contents: they hold personal data."""
    from dataclasses import asdict

    from processors.dlq import summarise

    try:
        summary = summarise(KafkaSettings(), _topics(), partner, everything=everything)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    if as_json:
        print(json.dumps(summary.to_json(), sort_keys=False))
        return
    shown = "events" if everything else "open events"
    table = Table(
        title=f"{summary.topic}: {summary.open} open of {len(summary.events)} events "
        f"({summary.letters} dead letters); {shown}",
        title_justify="left",
    )
    for _field, header in DLQ_COLUMNS:
        table.add_column(header, overflow="fold")
    for row in summary.rows:
        values = asdict(row)
        table.add_row(*(str(values[name]) for name, _header in DLQ_COLUMNS))
    out.print(table)


@dlq_app.command("replay")
def dlq_replay(
    partner: str = typer.Option(..., "--partner", "-p"),
    reason: str | None = typer.Option(None, help="Only dead letters of this reason, e.g. unknown-code."),
) -> None:
    """Copy dead letters back to raw.<partner> (after fixing a table, say); the processor drops repeats."""
    from processors.dlq import replay

    try:
        counts = replay(KafkaSettings(), _topics(), partner, reason=reason)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(json.dumps(counts, sort_keys=True))


def scan(
    topic: bool = typer.Option(False, "--topic", help="Scan curated.chain-events from the beginning."),
    storage: str | None = typer.Option(None, help="Scan Parquet snapshots under this storage URL."),
    site: Path | None = typer.Option(None, help="Scan a built dashboard: every page, download and listing."),
) -> None:
    """Prove that no direct identifier occurs in curated output. Exit 1 on any finding."""
    records: list[Any] = []
    if site:
        records += _site_records(site)
    if topic:
        records += _curated_records()
    if storage:
        import pyarrow.parquet as pq

        store = ObjectStore(storage, S3Settings())
        for key in store.list():
            if key.endswith(".parquet"):
                records += pq.read_table(io.BytesIO(store.get(key))).to_pylist()
            elif key.startswith("releases/") and key.endswith(".json"):  # released tables' OData and metadata
                records.append({key: json.loads(store.get(key))})
            elif key.startswith("releases/") and key.endswith(".csv"):
                records += list(csv.DictReader(io.StringIO(store.get(key).decode("utf-8")), delimiter=";"))
    count, findings = scan_all(records)
    for finding in findings[:50]:
        console.print(f"[red]finding[/red] {finding}")
    print(json.dumps({"records": count, "findings": len(findings)}))
    if findings:
        raise typer.Exit(1)


def _site_records(site: Path) -> list[Any]:
    """Every file of a built site as records: pages and styles as text, data files parsed."""
    import pyarrow.parquet as pq

    records: list[Any] = []
    files = sorted(p for p in site.rglob("*") if p.is_file())
    if not files:
        raise typer.BadParameter(f"{site}: no files to scan")
    for path in files:
        key, data = path.relative_to(site).as_posix(), path.read_bytes()
        if path.suffix == ".parquet":
            records += pq.read_table(io.BytesIO(data)).to_pylist()
        elif path.suffix == ".json":
            records.append({key: json.loads(data)})
        elif path.suffix == ".csv":
            records += list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=";"))
        else:  # html, css, svg: the text a reader sees, markup included
            records.append({key: data.decode("utf-8")})
    return records


def _curated_records() -> list[Any]:
    from ketenstroom.adapters.kafka import all_partitions, read_to_end
    from ketenstroom.contract.codec import decode
    from ketenstroom.contract.wire import unframe

    kafka, topics = KafkaSettings(), _topics()
    records: list[Any] = []
    with Registry(RegistrySettings()) as registry:
        for msg in read_to_end(kafka, all_partitions(kafka, topics.curated), group_id="ketenstroom-scan"):
            schema_id, payload = unframe(msg.value())
            records.append(decode(registry.writer_schema(schema_id), payload))
    return records


def register(app: typer.Typer) -> None:
    app.command()(process)
    app.command()(scan)
    app.add_typer(dlq_app, name="dlq")
