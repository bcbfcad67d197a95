"""``ketenstroom release build|list|show|verify`` and ``ketenstroom serve``: protected open-data tables."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import CellKeySettings, S3Settings, StorageSettings

app = typer.Typer(
    help="Released tables (StatLine-style, protected): build, list, show, verify.", no_args_is_help=True
)
console = Console(stderr=True)
out = Console()
STORAGE = typer.Option(None, "--storage", help="file://DIR or s3://BUCKET/PREFIX (default from settings).")


def _releases(storage: str | None, *, secret: bool = False) -> object:
    from releases.build import Releases

    store = ObjectStore(storage or StorageSettings().url, S3Settings())
    return Releases(store, CellKeySettings().secret() if secret else None)


def _fail(exc: KetenstroomError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def build_after_seal(store: ObjectStore, site: str | None = None) -> object:
    """The sink's ``on_sealed`` hook: release every sealed revision that has no release yet, then (when
    ``site`` names a directory or storage URL) rebuild the dashboard there. A failure is reported, not
    raised: the snapshot is sealed either way and ``release build`` / ``site build`` can be rerun."""
    from cli.site import rebuild_after_release
    from releases.build import Releases

    def hook(_sealed: list[object]) -> None:
        try:
            built = Releases(store, CellKeySettings().secret()).build_all()
        except Exception as exc:  # a release never stops the sink; it can be rebuilt
            console.print(f"[yellow]release not built ({type(exc).__name__}):[/yellow] {exc}")
            return
        for m in built:
            console.print(
                f"released {m.period} r{m.revision} ({m.perioden_status}): "
                f"{store.root}/releases/{m.period}/r{m.revision}/"
            )
        if built and site:
            rebuild = rebuild_after_release(store, site)
            assert callable(rebuild)
            rebuild()

    return hook


@app.command()
def build(
    period: str | None = typer.Argument(
        None, help="Period code, e.g. 2026MM05 (default: every sealed revision without a release)."
    ),
    revision: int | None = typer.Option(None, help="Snapshot revision (default: the latest)."),
    storage: str | None = STORAGE,
) -> None:
    """Build the release of a sealed snapshot revision (never rewrites an existing one)."""
    from releases.build import Releases

    try:
        rel = _releases(storage, secret=True)
        assert isinstance(rel, Releases)
        built = [rel.build(period, revision)] if period else rel.build_all()
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    for m in built:
        out.print(
            f"{m.period} r{m.revision} {m.perioden_status}: {len(m.files)} files -> "
            f"{rel.store.root}/releases/{m.period}/r{m.revision}/"
        )
    if not built:
        out.print("nothing to release")


@app.command("list")
def list_(storage: str | None = STORAGE) -> None:
    """Every released period with its revisions and statuses."""
    from releases.build import Releases

    rel = _releases(storage)
    assert isinstance(rel, Releases)
    table = Table("period", "revisions", "status (latest)", "tables")
    for period in rel.periods():
        ms = rel.manifests(period)
        if ms:
            table.add_row(
                period,
                " ".join(f"r{m.revision}" for m in ms),
                ms[-1].perioden_status,
                str(len(ms[-1].tables)),
            )
    out.print(table)


@app.command()
def show(period: str, revision: int | None = typer.Option(None), storage: str | None = STORAGE) -> None:
    """A release's manifest (JSON)."""
    from releases.build import Releases

    rel = _releases(storage)
    assert isinstance(rel, Releases)
    m = rel.manifest(period, revision)
    if m is None:
        console.print(f"[red]no release for {period}[/red]")
        raise typer.Exit(2)
    print(json.dumps(m.model_dump(mode="json"), indent=2))


@app.command()
def verify(storage: str | None = STORAGE) -> None:
    """Check every release's files against its manifest, and that its snapshot manifest is unchanged."""
    from releases.build import Releases

    rel = _releases(storage)
    assert isinstance(rel, Releases)
    bad = 0
    for period in rel.periods():
        for m in rel.manifests(period):
            problems = rel.verify(m)
            bad += bool(problems)
            out.print(f"{'ok' if not problems else 'DIFFERS'} {period} r{m.revision}: {len(m.files)} files")
            for p in problems:
                out.print(f"  {p}")
    raise typer.Exit(1 if bad else 0)


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8088, help="Port."),
    storage: str | None = STORAGE,
) -> None:
    """Serve the releases read-only in the OData v3 (cbsodata) and v4 (cbsodata4) shapes."""
    from releases.serve import server

    srv = server(ObjectStore(storage or StorageSettings().url, S3Settings()), host, port)
    console.print(
        f"serving releases on http://{host}:{srv.server_address[1]}/  (v4: /odata/v1, v3: /ODataFeed/odata)"
    )
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
