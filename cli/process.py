"""``ketenstroom process``, ``ketenstroom dlq list|replay`` and ``ketenstroom scan``."""

from __future__ import annotations

import csv
import io
import json
import signal
import threading
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.catalogue import partners_or_all
from ketenstroom.adapters.kafka import end_offsets
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics
from ketenstroom.contract.scanner import scan_all
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import (
    CatalogueSettings,
    KafkaSettings,
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


class Runner(str, Enum):
    transactional = "transactional"
    faust = "faust"


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
    runner: Runner = typer.Option(
        Runner.transactional,
        help="transactional: exactly-once (Kafka transactions); "
        "faust: faust-streaming worker, at-least-once.",
    ),
    app_id: str = typer.Option("ketenstroom-processor", help="Consumer group and state namespace."),
    instance_id: str = typer.Option(
        "0", help="Stable per running instance: a restart fences its predecessor."
    ),
    until_caught_up: bool = typer.Option(False, help="Stop once the input as of start-up is processed."),
    metrics_port: int = typer.Option(0, help="Serve /metrics and /health here (0: off)."),
) -> None:
    """Pseudonymise and normalise raw.<partner> into curated.chain-events; the rest to dlq.<partner>."""
    from processors.build import build_transformer
    from processors.metrics import ProcessorMetrics

    kafka, topics = KafkaSettings(), _topics()
    partner = partners_or_all(partner)
    try:
        stop_at = (
            end_offsets(kafka, [topics.raw(p) for p in partner], group_id=app_id) if until_caught_up else None
        )
        if runner is Runner.faust:
            from processors.app import run_worker

            progress = run_worker(
                partners=partner,
                kafka=kafka,
                registry_settings=RegistrySettings(),
                paths=CatalogueSettings(),
                pseudonym=PseudonymSettings(),
                topics=topics,
                stop_at=stop_at,
                app_id=app_id,
            )
            result: dict[str, Any] = {
                "records_in": progress.records_in,
                "curated": progress.curated,
                "dead_lettered": progress.dead,
                "reconciles": progress.reconciles(),
            }
        else:
            result = _run_transactional(
                kafka,
                topics,
                partner,
                app_id,
                instance_id,
                stop_at,
                metrics_port,
                build_transformer,
                ProcessorMetrics,
            )
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(json.dumps(result, sort_keys=True))


def _run_transactional(
    kafka: KafkaSettings,
    topics: Topics,
    partners: list[str],
    app_id: str,
    instance_id: str,
    stop_at: dict[tuple[str, int], int] | None,
    metrics_port: int,
    build_transformer: Any,
    metrics_cls: Any,
) -> dict[str, Any]:
    from ketenstroom.adapters.observability import ObservabilityServer
    from processors.runner import TransactionalProcessor

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = metrics_cls()
    with Registry(RegistrySettings()) as registry:
        transformer = build_transformer(
            registry=registry, paths=CatalogueSettings(), pseudonym=PseudonymSettings(), topics=topics
        )
        proc = TransactionalProcessor(
            kafka=kafka,
            topics=topics,
            partners=partners,
            transformer=transformer,
            app_id=app_id,
            instance_id=instance_id,
            metrics=metrics,
        )
        server = None
        if metrics_port:
            server = ObservabilityServer(
                metrics.registry, lambda: (proc.healthy, {"app_id": app_id}), port=metrics_port
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


@dlq_app.command("list")
def dlq_list(partner: str = typer.Option(..., "--partner", "-p")) -> None:
    """Dead letters of one partner by reason and stage (never their contents: they hold personal data)."""
    from processors.dlq import summarise

    try:
        summary = summarise(KafkaSettings(), _topics(), partner)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    table = Table(f"{_topics().dlq(partner)}: {summary.total} dead letters")
    for column in ("reason", "count", "example error"):
        table.add_column(column, overflow="fold")
    for reason, count in summary.by_reason.most_common():
        table.add_row(reason, str(count), summary.errors.get(reason, ""))
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
