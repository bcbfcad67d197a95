"""``ketenstroom site build|serve``: the static dashboard built from the releases."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import S3Settings, StorageSettings

app = typer.Typer(
    help="The dashboard: one static site from the releases (never from microdata).", no_args_is_help=True
)
console = Console(stderr=True)
out = Console()
SITE_DIR = Path("var/site")


def _site_store(target: str) -> ObjectStore:
    return ObjectStore(target if "://" in target else f"file://{Path(target).resolve()}", S3Settings())


def build_site_from(storage: ObjectStore, target: str) -> int:
    """Build the site from the releases in ``storage`` into ``target``; the number of files written."""
    from dashboard.build import build_site

    return len(build_site(storage, _site_store(target)))


def rebuild_after_release(storage: ObjectStore, target: str) -> object:
    """A hook for after releases were built: rebuild the site. A failure is reported, never raised."""

    def hook() -> None:
        try:
            n = build_site_from(storage, target)
        except Exception as exc:  # the site never stops the sink; `site build` can be rerun
            console.print(f"[yellow]site not rebuilt ({type(exc).__name__}):[/yellow] {exc}")
            return
        console.print(f"site rebuilt: {n} files in {target}")

    return hook


@app.command()
def build(
    storage: str | None = typer.Option(
        None, help="Where the releases are: file://DIR or s3://BUCKET/PREFIX."
    ),
    out_: str = typer.Option(str(SITE_DIR), "--out", help="A directory, or a storage URL (file://, s3://)."),
) -> None:
    """Build the dashboard from every release (deterministic: the same releases give the same bytes)."""
    try:
        n = build_site_from(ObjectStore(storage or StorageSettings().url, S3Settings()), out_)
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"site built: {n} files in {out_}")
    out.print(f"open it: .venv/bin/ketenstroom site serve --dir {out_}")


@app.command()
def serve(
    directory: Path = typer.Option(SITE_DIR, "--dir", help="The built site."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8090, help="Port (0: any free one)."),
) -> None:
    """Serve the built site read-only."""
    from dashboard.serve import server

    try:
        srv = server(directory, host, port)
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"serving the dashboard on http://{host}:{srv.server_address[1]}/", highlight=False)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
