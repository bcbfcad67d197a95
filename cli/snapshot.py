"""``ketenstroom snapshot list|show|verify|seal|tables``: sealed periods, revisions, integrity, microdata."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import S3Settings, SnapshotSettings, StorageSettings

app = typer.Typer(help="Sealed period snapshots: list, show, verify, seal, tables.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # errors whole on one line, for logs and grep
out = Console(soft_wrap=True)

STORAGE = typer.Option(None, "--storage", help="file://DIR or s3://BUCKET/PREFIX (default from settings).")


def _store(storage: str | None) -> ObjectStore:
    return ObjectStore(storage or StorageSettings().url, S3Settings())


def _fail(exc: KetenstroomError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def parse_as_of(value: str | None) -> datetime | None:
    """``--as-of``: an ISO date or time (UTC when no offset is given), or None for the wall clock."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date or date-time, e.g. 2026-05-01T00:00+02:00"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def policy_settings(
    grace_days: float | None, final_after_days: float | None, period: str | None = None
) -> SnapshotSettings:
    given = {"grace_days": grace_days, "final_after_days": final_after_days, "period": period}
    overrides = {k: v for k, v in given.items() if v is not None}
    # the constructor so the environment applies to what is not given; mypy cannot match
    # **dict[str, object] against the fields' own types
    return SnapshotSettings(**overrides)  # type: ignore[arg-type]


@app.command("list")
def list_(storage: str | None = STORAGE, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every period: its revisions and statuses, rows in the latest, and rows staged but not yet sealed."""
    from ketenstroom.adapters.snapshots import Snapshots

    try:
        snapshots = Snapshots(_store(storage))
        rows: list[dict[str, Any]] = []
        for period in snapshots.periods():
            manifests = snapshots.manifests(period)
            staged = snapshots.staged(period)
            latest = manifests[-1] if manifests else None
            rows.append(
                {
                    "period": period,
                    "revisions": [f"r{m.revision} {m.status}" for m in manifests],
                    "latest_rows": latest.rows if latest else None,
                    "sealed_at": latest.sealed_at.isoformat() if latest else None,
                    "staged_files": len(staged),
                    "held_after_final": bool(latest and latest.status == "final" and staged),
                }
            )
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("period", "revisions", "rows (latest)", "sealed at", "staged files")
    for row in rows:
        held = str(row["staged_files"]) + (" (held: after final)" if row["held_after_final"] else "")
        table.add_row(
            row["period"],
            ", ".join(row["revisions"]) or "not sealed",
            "" if row["latest_rows"] is None else f"{row['latest_rows']:,}",
            row["sealed_at"] or "",
            held,
        )
    out.print(table)


@app.command()
def show(
    period: str = typer.Argument(..., help="CBS period code, e.g. 2026MM07."),
    revision: int | None = typer.Option(None, help="Default: the latest."),
    storage: str | None = STORAGE,
    as_json: bool = typer.Option(False, "--json", help="Print the manifest itself."),
) -> None:
    """One revision: status, counts per partner and event type, offsets, versions, files, how to read it."""
    from ketenstroom.adapters.snapshots import Snapshots

    try:
        store = _store(storage)
        manifest = Snapshots(store).manifest(period, revision)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    if manifest is None:
        console.print(
            f"[red]error:[/red] no sealed revision of {period}"
            + ("" if revision is None else f" r{revision}")
        )
        raise typer.Exit(1)
    if as_json:
        print(manifest.model_dump_json(indent=2))
        return
    out.print(
        f"[bold]{manifest.period}[/bold] r{manifest.revision} [bold]{manifest.status}[/bold], sealed "
        f"{manifest.sealed_at.isoformat()} "
        f"({manifest.period_start.isoformat()} .. {manifest.period_end.isoformat()})"
    )
    out.print(
        f"rows {manifest.rows:,} (new in this revision {manifest.rows_new:,}, duplicates dropped "
        f"{manifest.duplicates_dropped:,}) in {len(manifest.files)} files"
    )
    table = Table("partner", "event type", "rows")
    for partner, kinds in manifest.rows_per_event_type.items():
        for kind, n in kinds.items():
            table.add_row(partner, kind, f"{n:,}")
    out.print(table)
    offsets = ", ".join(f"p{p} {r.first}..{r.last} ({r.rows:,})" for p, r in manifest.offsets.items())
    out.print(f"offsets: {offsets}")
    out.print(
        f"schema ids {manifest.schema_ids}; terminology {manifest.mapping_versions}; "
        f"pseudonym keys {manifest.pseudonym_key_ids}"
    )
    tables = Snapshots(store).tables(manifest)
    if tables is None:
        out.print("chain and person tables: not built yet (ketenstroom snapshot tables)")
    for name, entry in (tables.files if tables else {}).items():
        out.print(f"{name} table: {entry.rows:,} rows, {store.root}/{entry.path}")
    if tables is not None and tables.identity is not None:
        ids = tables.identity
        inputs = ", ".join(f"{p} r{r}" for p, r in sorted(ids.link_inputs.items()))
        out.print(
            f"persons: {ids.persons:,} ({ids.persons_merged_by_new_links:,} merged by new links, "
            f"{ids.persons_in_conflict:,} flagged in {ids.conflicts:,} SKN conflicts; "
            f"{ids.links:,} SKN-BSN links from {inputs})"
        )
    print(f"read: {store.root}/{manifest.prefix}data/*.parquet")


@app.command()
def verify(
    period: str | None = typer.Argument(None, help="Default: every period."),
    revision: int | None = typer.Option(None, help="Default: every revision."),
    storage: str | None = STORAGE,
) -> None:
    """Re-read every file of every sealed revision; check sha256 and row counts against the manifest."""
    from ketenstroom.adapters.snapshots import Snapshots

    failed = checked = 0
    try:
        snapshots = Snapshots(_store(storage))
        for p in [period] if period else snapshots.periods():
            for manifest in snapshots.manifests(p):
                if revision is not None and manifest.revision != revision:
                    continue
                checked += 1
                problems = snapshots.verify(manifest)
                label = f"{manifest.period} r{manifest.revision}"
                if problems:
                    failed += 1
                    for problem in problems:
                        print(f"DIFFERENT {label}: {problem}")
                else:
                    tables = snapshots.tables(manifest)
                    files = len(manifest.files) + (len(tables.files) if tables else 0)
                    extra = "" if tables else " (no tables yet)"
                    print(f"ok {label} {manifest.status}: {files} files, {manifest.rows} rows{extra}")
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(f"verified {checked} revisions, {failed} with differences")
    if failed or checked == 0:
        raise typer.Exit(1)


@app.command()
def seal(
    storage: str | None = STORAGE,
    as_of: str | None = typer.Option(None, help="Seal as if it were this moment (ISO); default now."),
    grace_days: float | None = typer.Option(None, help="Delivery grace after a period's end (days)."),
    final_after_days: float | None = typer.Option(None, help="Days after a period's end it becomes final."),
) -> None:
    """Seal every period that is due, without consuming (the sink does this itself when it catches up)."""
    from sinks.seal import Sealer, SealPolicy

    try:
        policy = SealPolicy.from_settings(policy_settings(grace_days, final_after_days), parse_as_of(as_of))
        sealed = Sealer(_store(storage), policy).seal_due()
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    for manifest in sealed:
        print(
            json.dumps(
                {
                    "period": manifest.period,
                    "revision": manifest.revision,
                    "status": manifest.status,
                    "rows": manifest.rows,
                    "rows_new": manifest.rows_new,
                    "duplicates_dropped": manifest.duplicates_dropped,
                }
            )
        )
    console.print(f"{len(sealed)} revisions sealed")


@app.command()
def tables(
    period: list[str] = typer.Argument(None, help="Periods (default: every period)."),
    storage: str | None = STORAGE,
) -> None:
    """Build the chain and person tables of every sealed revision that has none yet."""
    from sinks.tables import build_missing_tables

    try:
        built = build_missing_tables(_store(storage), period or None)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    for t in built:
        print(
            json.dumps(
                {"period": t.period, "revision": t.revision, **{k: v.rows for k, v in t.files.items()}}
            )
        )
    console.print(f"tables built for {len(built)} revisions")
