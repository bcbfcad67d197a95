"""``ketenstroom extract make|list|show|verify``: research extracts from sealed revisions."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.errors import ConfigurationError, ExtractRefused, KetenstroomError
from ketenstroom.settings import (
    CatalogueSettings,
    ExtractSettings,
    PseudonymSettings,
    S3Settings,
    StorageSettings,
)

app = typer.Typer(
    help="Research extracts: per-study microdata from sealed revisions, re-keyed pseudonyms, "
    "k-anonymity and l-diversity checked, recorded in an append-only register.",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()

STORAGE = typer.Option(
    None, "--storage", help="Snapshot store: file://DIR or s3://BUCKET/PREFIX (default from settings)."
)
REGISTER = typer.Option(
    None,
    "--register",
    help="Register store (default KETENSTROOM_EXTRACT_REGISTER_URL, else the snapshot store).",
)


def _register(register: str | None, storage: str | None) -> ObjectStore:
    url = register or ExtractSettings().register_url or storage or StorageSettings().url
    return ObjectStore(url, S3Settings())


def _fail(exc: KetenstroomError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def _is_pseudonym_key(secret: bytes) -> bool:
    try:
        return PseudonymSettings().secret() == secret
    except ConfigurationError:  # no pseudonymisation key configured here: nothing to compare
        return False


@app.command()
def make(
    request: Path = typer.Argument(..., exists=True, dir_okay=False, help="The study's request (TOML)."),
    output: str = typer.Option(..., "--out", help="Directory or storage URL for the extract (must be new)."),
    storage: str | None = STORAGE,
    register: str | None = REGISTER,
    catalogue: Path | None = typer.Option(
        None, help="Research catalogue (default publication/research.toml)."
    ),
) -> None:
    """Make one extract. Exit 0: written; 1: refused as unsafe (offending combinations printed); 2: error."""
    from extracts.catalogue import Catalogue, StudyRequest
    from extracts.make import Inputs, make_extract, output_store

    paths = CatalogueSettings()
    settings = ExtractSettings()
    try:
        secret = settings.secret()
        if _is_pseudonym_key(secret):
            raise ConfigurationError(
                "the extract key is the pseudonymisation key; give extracts a key of their own "
                "(KETENSTROOM_EXTRACT_KEY_FILE), or study pseudonyms could be recomputed from platform ones"
            )
        snapshots = ObjectStore(storage or StorageSettings().url, S3Settings())
        target = output_store(output) if "://" not in output else ObjectStore(output, S3Settings())
        manifest = make_extract(
            StudyRequest.load(request),
            Catalogue.load(catalogue or paths.publication_dir / "research.toml"),
            Inputs(
                snapshots=snapshots,
                register=_register(register, storage),
                terminology_dir=paths.terminology_dir,
                secret=secret,
                key_id=settings.key_id,
            ),
            target,
        )
    except ExtractRefused as exc:
        console.print(f"[red]{exc}[/red]")
        if exc.offending:
            names = list(exc.offending[0])
            table = Table(*names, title="combinations below the thresholds (for the operator only)")
            for row in exc.offending[:50]:
                table.add_row(*("." if row[n] is None else str(row[n]) for n in names))
            console.print(table)
            if len(exc.offending) > 50:
                console.print(f"... and {len(exc.offending) - 50} more combinations")
        raise typer.Exit(1) from exc
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    a = manifest.achieved
    print(
        json.dumps(
            {
                "extract_id": manifest.extract_id,
                "study": manifest.study,
                "output": manifest.output,
                "rows": a.rows,
                "k": a.k,
                "l": a.l,
                "rows_suppressed": a.rows_suppressed,
                "rows_removed": a.rows_removed,
                "revisions": [f"{r.period} r{r.revision}" for r in manifest.revisions],
            }
        )
    )


@app.command("list")
def list_(
    storage: str | None = STORAGE,
    register: str | None = REGISTER,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every extract on record, oldest first: study, requester, rows, k and l achieved, where it went."""
    from extracts.register import entries

    try:
        found = entries(_register(register, storage))
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    rows = [
        {
            "extract_id": e.extract_id,
            "study": e.study,
            "requester": e.requester,
            "created_at": e.created_at.isoformat(),
            "rows": e.manifest.achieved.rows,
            "k": e.manifest.achieved.k,
            "l": e.manifest.achieved.l,
            "output": e.output,
        }
        for e in found
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("extract", "study", "requester", "created", "rows", "k", "l", "output")
    for r in rows:
        table.add_row(
            *(
                str(r[c])
                for c in ("extract_id", "study", "requester", "created_at", "rows", "k", "l", "output")
            )
        )
    out.print(table)


@app.command()
def show(
    extract_id: str = typer.Argument(..., help="As `extract list` shows it."),
    storage: str | None = STORAGE,
    register: str | None = REGISTER,
) -> None:
    """One extract's manifest as recorded in the register (JSON)."""
    from extracts.register import entry

    try:
        found = entry(_register(register, storage), extract_id)
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(found.manifest.model_dump_json(indent=2))


@app.command()
def verify(
    extract_id: str | None = typer.Argument(None, help="Default: every extract on record."),
    storage: str | None = STORAGE,
    register: str | None = REGISTER,
) -> None:
    """Re-read every extract: sha256 against the register, k and l recomputed. Exit 1 on a difference."""
    from extracts.register import entries, entry
    from extracts.register import verify as check

    failed = 0
    try:
        store = _register(register, storage)
        found = [entry(store, extract_id)] if extract_id else entries(store)
        for e in found:
            problems = check(e)
            if problems:
                failed += 1
                for problem in problems:
                    print(f"DIFFERENT {e.extract_id}: {problem}")
            else:
                a = e.manifest.achieved
                print(f"ok {e.extract_id}: {a.rows} rows, k={a.k} l={a.l}")
    except KetenstroomError as exc:
        raise _fail(exc) from exc
    print(f"verified {len(found)} extracts, {failed} with differences")
    if failed or not found:
        raise typer.Exit(1)
