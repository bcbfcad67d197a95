"""Pipeline commands: topics, generate, publish, process, sink, demo."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import Progress

from cli.catalogue import load
from cli.signals import stop_on_signals
from ketenstroom.adapters.kafka import end_offsets, ensure_topics, topic_configs, topic_replicas
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.preflight import require_broker
from ketenstroom.contract import Topics
from ketenstroom.contract.deliveries import DELIVERIES_RETENTION_DAYS
from ketenstroom.contract.retention import TopicSpec, drift
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import (
    KafkaSettings,
    MonitorSettings,
    ProcessorSettings,
    RegistrySettings,
    S3Settings,
    SinkSettings,
    StorageSettings,
    TopicSettings,
)

if TYPE_CHECKING:
    from ketenstroom.settings import SinkSettings
    from sinks.runner import Sink, SinkReport


def _topics() -> Topics:
    return Topics(TopicSettings().prefix)


console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
out = Console(soft_wrap=True)


def _fail(exc: KetenstroomError, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code)


def topic_plan(partitions: int) -> list[TopicSpec]:
    """Every topic the pipeline needs, with its kind's declared configuration (contract/retention.py)."""
    from monitor.app import changelog_topics
    from processors.dedup import changelog_topic

    catalogue, names, topic_settings = load(), _topics(), TopicSettings()
    policy, app_id = topic_settings.retention(), ProcessorSettings().app_id
    plan: list[TopicSpec] = []
    for partner in catalogue.partners.values():
        n, raw = partner.topics.partitions, names.raw(partner.name)
        plan += [
            TopicSpec(raw, "raw", n, policy.raw(partner.topics.retention_days)),
            TopicSpec(names.dlq(partner.name), "dlq", n, policy.dlq()),
            TopicSpec(names.dlq_status(partner.name), "state", n, policy.state()),
            TopicSpec(changelog_topic(app_id, raw), "state", n, policy.state()),
        ]
    plan.append(TopicSpec(names.curated, "curated", partitions, policy.curated()))
    # one partition: every delivery in the order they happened, read whole by `ketenstroom status`;
    # deleted by age like raw (no personal data in it: counts and digests)
    plan.append(TopicSpec(names.deliveries, "ops", 1, policy.raw(DELIVERIES_RETENTION_DAYS)))
    # the delivery monitor's table changelogs (faust would create them itself, with its own defaults)
    monitor_changelogs = changelog_topics(
        MonitorSettings(),
        names,
        curated_partitions=partitions,
        dlq_partitions={p.name: p.topics.partitions for p in catalogue.partners.values()},
    )
    plan += [TopicSpec(name, "state", n, policy.state()) for name, n in monitor_changelogs.items()]
    return plan


def topics(
    partitions: int = typer.Option(
        3, help="Partitions of curated.chain-events (raw and DLQ: the catalogue's)."
    ),
    replication_factor: int | None = typer.Option(
        None, help="Default: KETENSTROOM_TOPIC_REPLICATION_FACTOR, else the broker's default."
    ),
    check: bool = typer.Option(
        False, "--check", help="Create nothing: report drift from the declaration; exit 1 if any."
    ),
) -> None:
    """Create every topic with its declared retention (raw: the catalogue's; DLQ: until resolved;
    curated: long enough to rebuild an unsealed period; state: compacted), or --check a live cluster."""
    kafka, plan, declared = KafkaSettings(), topic_plan(partitions), TopicSettings()
    rf = replication_factor or declared.replication_factor
    try:
        if check:
            names = [t.name for t in plan]
            found = drift(
                plan,
                topic_configs(kafka, names),
                replicas=topic_replicas(kafka, names),
                replication_factor=rf,
            )
            for d in found:
                out.print(f"drift  {d}")
            out.print(f"{len(plan) - len({d.topic for d in found})} of {len(plan)} topics as declared")
            if found:
                raise typer.Exit(1)
            return
        for spec in plan:
            ensure_topics(
                kafka,
                [spec.name],
                partitions=spec.partitions,
                replication_factor=rf or -1,
                config=dict(spec.config),
            )
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    console.print(f"{len(plan)} topics present")


def generate(
    out_dir: Path = typer.Option(..., "--out", help="Directory for the exports (one file per partner)."),
    cases: int = typer.Option(1000, help="Cases to follow through the chain."),
    seed: int = typer.Option(7, help="Seed: the same seed gives byte-identical exports."),
    noise: float = typer.Option(0.0, help="Share of rows with a realistic mistake (0..1)."),
    as_of: datetime | None = typer.Option(
        None,
        formats=["%Y-%m-%d"],
        help="The export's day (default today): nothing happens or is registered on or after it.",
    ),
    identity_noise: float = typer.Option(
        1.0,
        help="Identity noise (police records without SKN, BSN-only partners, conflicting pairs): "
        "1 the realistic mix, 0 none, 2 twice as much.",
    ),
) -> None:
    """Write seeded, chain-consistent exports for every partner, in each partner's own columns and codes."""
    from synthetic import IdentityNoise, generate_chain

    report = generate_chain(
        out_dir,
        cases=cases,
        seed=seed,
        noise=noise,
        as_of=None if as_of is None else as_of.date(),
        identity=IdentityNoise().scaled(identity_noise),
    )
    for partner, pr in report.partners.items():
        console.print(
            f"{partner:13} {pr.rows_written:>8} rows -> {pr.path}  (expected accepted "
            f"{pr.expected_accepted}, rejected {pr.expected_rejected})"
        )
    truth = report.identity
    console.print(
        f"persons: {truth['persons']} ({truth['unlinkable']} without linking evidence, "
        f"{truth['conflicts']} conflicting SKN-BSN pairs)"
    )
    console.print(
        f"as of {report.as_of}: nothing dated on or after it; report: {out_dir / 'generation.json'}"
    )


def publish(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Export files (CSV or JSONL)."),
    partner: str = typer.Option(..., "--partner", "-p", help="Delivering partner, e.g. om."),
    receipt: Path | None = typer.Option(
        None, help="Where to write the JSON receipt (default FILE.<time>-<delivery>.receipt.json)."
    ),
    rejects: Path | None = typer.Option(
        None, help="Reject file, owner-only (default FILE.<time>-<delivery>.rejects.jsonl)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an unexpected failure."),
) -> None:
    """Validate, encode and produce an export. Exit 0: all accepted; 1: some rejected; 3: not delivered.

    Every run writes a receipt, also when the delivery fails (then exit 3 and one line saying why).
    """
    import traceback

    from producers.publish import Publisher, Receipt

    error: BaseException | None = None
    try:
        with (
            Publisher(
                partner, kafka=KafkaSettings(), registry=RegistrySettings(), topics=_topics()
            ) as publisher,
            Progress(console=console, transient=True) as bar,
        ):
            task = bar.add_task(f"publishing {partner}", total=None)
            result = publisher.publish(
                files, reject_path=rejects, progress=lambda n: bar.update(task, completed=n)
            )
            error = publisher.error
    except Exception as exc:  # before or after the delivery: still a receipt and one line, not a traceback
        from producers.publish import one_line

        error = exc
        result = Receipt(partner=partner, files=[str(f) for f in files], failure=one_line(exc))
    receipt_path = receipt or result.default_path("receipt.json")
    receipt_path.write_text(result.to_json(), encoding="utf-8")
    if result.failure:
        console.print(f"[red]not delivered:[/red] {result.failure}")
        if error is not None and debug:
            console.print("".join(traceback.format_exception(error)), markup=False, highlight=False)
        elif error is not None and not isinstance(error, KetenstroomError):
            console.print("[dim](run with --debug for the traceback)[/dim]")
    out.print(result.summary())
    out.print(f"  receipt        {receipt_path}")
    raise typer.Exit(result.exit_code)


def sink(
    storage: str | None = typer.Option(
        None, help="file://DIR or s3://BUCKET/PREFIX (default from settings)."
    ),
    period: str | None = typer.Option(None, help="month, quarter or year (default from settings: month)."),
    group: str | None = typer.Option(
        None,
        help="Consumer group (default: KETENSTROOM_SINK_GROUP_ID, else "
        f"{SinkSettings.model_fields['group_id'].default}).",
    ),
    instance_id: str | None = typer.Option(
        None,
        help="Stable per running instance, distinct for concurrent ones: a restart takes its partitions "
        "back at once (static group membership) (default: KETENSTROOM_SINK_INSTANCE_ID, else 0).",
    ),
    until_caught_up: bool = typer.Option(False, help="Stop once the topic as of start-up is written."),
    seal: bool = typer.Option(
        True, help="Seal due periods when caught up; run one sealing instance per store."
    ),
    grace_days: float | None = typer.Option(None, help="Delivery grace after a period's end (days)."),
    final_after_days: float | None = typer.Option(None, help="Days after a period's end it becomes final."),
    as_of: str | None = typer.Option(None, help="Seal as if it were this moment (ISO); default now."),
    max_buffered: int | None = typer.Option(
        None, help="Rows buffered before a staged file is written (default: KETENSTROOM_SINK_MAX_BUFFERED)."
    ),
    tables: bool = typer.Option(True, help="Derive the chain and person tables of each sealed revision."),
    metrics_port: int | None = typer.Option(
        None, help="Serve /metrics and /health here, 0: off [default: KETENSTROOM_SINK_METRICS_PORT]."
    ),
    release: bool = typer.Option(
        True,
        help="Build the release of each revision sealed (needs the cell-key secret; skipped with a note "
        "if unset).",
    ),
    site: str = typer.Option(
        "var/site",
        help="Rebuild the dashboard here (directory or storage URL) after each release; '' to skip.",
    ),
) -> None:
    """Stage curated.chain-events as period Parquet, seal due periods (manifest last), then commit offsets."""
    from cli.release import build_after_seal
    from cli.snapshot import parse_as_of, policy_settings
    from sinks.runner import Sink
    from sinks.seal import Sealer, SealPolicy

    kafka = KafkaSettings()
    url = storage or StorageSettings().url
    try:
        settings = policy_settings(grace_days, final_after_days, period)
        store = ObjectStore(url, S3Settings())
        topics = _topics()
        given = {
            "group_id": group,
            "instance_id": instance_id,
            "max_buffered": max_buffered,
            "metrics_port": metrics_port,
        }
        # the constructor (not model_validate) so the environment still applies to what is not given;
        # mypy cannot match **dict[str, object] against the fields' own types
        sink_settings = SinkSettings(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
        require_broker(kafka)  # an unreachable cluster fails here, within KETENSTROOM_KAFKA_CONNECT_TIMEOUT_S
        stop_at = (
            end_offsets(kafka, [topics.curated], group_id=sink_settings.group_id) if until_caught_up else None
        )
        policy = SealPolicy.from_settings(settings, parse_as_of(as_of))
        stop = stop_on_signals()  # SIGTERM/Ctrl-C: flush, seal what is due, commit, exit 0
        runner = Sink(
            kafka=kafka,
            registry=RegistrySettings(),
            store=store,
            settings=sink_settings,
            period=settings.period,
            topics=topics,
            sealer=Sealer(store, policy) if seal else None,
            tables=tables,
            on_sealed=build_after_seal(store, site or None) if release and tables and seal else None,  # type: ignore[arg-type]
        )
        report = _run_observed(runner, sink_settings, stop_at, stop)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(
        json.dumps(
            {
                "storage": store.root,
                "records": report.records,
                "staged": report.written,
                "undecodable": report.undecodable,
                "rows_per_period": report.rows_per_period,
                "objects": len(report.objects),
                "sealed": [f"{m.period} r{m.revision} {m.status}" for m in report.sealed],
                "duplicates_dropped": report.duplicates,
                "tables": [f"{t.period} r{t.revision}" for t in report.tables],
            },
            sort_keys=True,
        )
    )


def _run_observed(
    runner: Sink,
    settings: SinkSettings,
    stop_at: dict[tuple[str, int], int] | None,
    stop: threading.Event,
) -> SinkReport:
    """Run the sink until it has caught up (when asked) or ``stop`` is set, serving ``/metrics`` and
    ``/health`` meanwhile when a port is set."""
    from ketenstroom.adapters.observability import ObservabilityServer

    server = None
    if settings.metrics_port:
        server = ObservabilityServer(
            runner.metrics.registry,
            lambda: (runner.healthy, {"group_id": settings.group_id}),
            host=settings.metrics_host,
            port=settings.metrics_port,
        ).start()
    try:
        return runner.run(stop_at=stop_at, should_stop=stop.is_set)
    finally:
        if server is not None:
            server.stop()


def demo(
    cases: int = typer.Option(500, help="Cases to generate and follow through the chain."),
    workdir: Path = typer.Option(Path("var/demo"), help="Where exports, receipts and snapshots go."),
) -> None:
    """Run the pipeline on the running stack: generate, publish every partner, process, sink, scan."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "pseudonym.key"
    cellkey_file = workdir / "cellkey.key"  # a secret of its own: it fixes how released counts are rounded
    for secret_file in (key_file, cellkey_file):
        if not secret_file.exists():
            secret_file.write_text(secrets.token_hex(32))
            secret_file.chmod(0o600)
    seed = secrets.randbelow(10**6)  # a new delivery each run: new record ids, new events
    exports = workdir / f"exports-{seed}"
    snapshots = workdir / "snapshots"
    child_env = {
        **os.environ,
        "KETENSTROOM_PSEUDONYM_KEY_FILE": str(key_file),
        "KETENSTROOM_PSEUDONYM_KEY_ID": "demo-k1",
        "KETENSTROOM_CELLKEY_KEY_FILE": str(cellkey_file),
        "KETENSTROOM_STORAGE_URL": f"file://{snapshots}",
    }

    def step(name: str, args: list[str], ok: tuple[int, ...] = (0,)) -> None:
        console.rule(f"[bold]{name}")
        result = subprocess.run([sys.executable, "-m", "cli", *args], env=child_env, check=False)
        if result.returncode not in ok:
            console.print(f"[red]step {name} failed with exit code {result.returncode}[/red]")
            raise typer.Exit(result.returncode)

    step("topics", ["topics"])
    step(
        "generate",
        ["generate", "--out", str(exports), "--cases", str(cases), "--noise", "0.02", "--seed", str(seed)],
    )
    from synthetic import GenerationReport

    generated = GenerationReport.from_json((exports / "generation.json").read_text(encoding="utf-8"))
    for partner in generated.partners:  # exit 1 = some rows rejected, which a noisy export is meant to show
        step(
            f"publish {partner}",
            [
                "publish",
                "--partner",
                partner,
                "--receipt",
                str(exports / f"{partner}.receipt.json"),
                generated.partners[partner].path,
            ],
            ok=(0, 1),
        )
    step("process", ["process", "--until-caught-up", "--app-id", "ketenstroom-demo"])
    site = workdir.parent / "site" if workdir.name == "demo" else workdir / "site"  # var/site by default
    # the sink's hook builds the release of each revision it seals, then rebuilds the site
    step("sink", ["sink", "--until-caught-up", "--group", "ketenstroom-demo-sink", "--site", str(site)])
    # every pipeline output: the curated topic and every Parquet file (staged, sealed, tables); exports,
    # reject files and DLQs are the partners' own raw data and stay out of it
    step("scan", ["scan", "--topic", "--storage", f"file://{snapshots}"])
    step("snapshot list", ["snapshot", "list", "--storage", f"file://{snapshots}"])
    step("snapshot verify", ["snapshot", "verify", "--storage", f"file://{snapshots}"])
    step("release build", ["release", "build", "--storage", f"file://{snapshots}"])  # any the sink left
    step("release list", ["release", "list", "--storage", f"file://{snapshots}"])
    step("release verify", ["release", "verify", "--storage", f"file://{snapshots}"])
    step("site build", ["site", "build", "--storage", f"file://{snapshots}", "--out", str(site)])
    step("scan site", ["scan", "--site", str(site)])
    console.rule("[bold]done")
    out.print(f"exports and receipts: {exports}")
    from ketenstroom.adapters.snapshots import Snapshots

    sealed = Snapshots(ObjectStore(f"file://{snapshots}"))
    latest = [m for m in (sealed.manifest(p) for p in sealed.periods()) if m is not None]
    globs = [f"{snapshots}/{m.prefix}data/*.parquet" for m in latest]
    out.print(
        f"sealed snapshots (latest revision of {len(globs)} periods): {snapshots}/snapshots/<period>/r<N>/"
    )
    if globs:
        files = ", ".join(f"'{g}'" for g in globs)
        query = f"select period, chain_step, count(*) n from read_parquet([{files}]) group by all"  # noqa: S608 - a printed hint
        print(
            f'read them: .venv/bin/python -c "import duckdb; print(duckdb.sql(\\"{query} order by all\\"))"'
        )
    out.print("stop the stack: make down")
    _print_releases(snapshots)
    out.print(f"dashboard built from the releases: {site}/index.html")
    print(f"open it: .venv/bin/ketenstroom site serve --dir {site}   # then http://127.0.0.1:8090/")  # last


def _print_releases(snapshots: Path) -> None:
    from releases.build import Releases

    released = Releases(ObjectStore(f"file://{snapshots}"))
    newest = [m for m in (released.manifest(p) for p in released.periods()) if m is not None]
    if newest:
        last = newest[-1]
        out.print(
            f"releases ({len(newest)} periods, {len(last.tables)} tables each): "
            f"{snapshots}/releases/<period>/r<N>/"
        )
        out.print(f"serve them: .venv/bin/ketenstroom serve --storage file://{snapshots}  (OData v3 and v4)")
        print(f"release written: {snapshots}/releases/{last.period}/r{last.revision}/")


def register(app: typer.Typer) -> None:
    for command in (topics, generate, publish, sink, demo):
        app.command()(command)
