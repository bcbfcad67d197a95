"""The one command surface, ``ketenstroom``, for people and CI. A leaf: nothing imports it."""

from __future__ import annotations

import logging
import os
import sys

import typer

from cli import (
    access,
    catalogue,
    extract,
    infra,
    monitor,
    pipeline,
    process,
    release,
    schemas,
    site,
    snapshot,
    status,
)

app = typer.Typer(
    name="ketenstroom",
    help="Event streaming for the Dutch criminal justice chain: deliver once, pseudonymise and "
    "normalise in flight, freeze into period snapshots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(infra.app, name="infra")
app.add_typer(schemas.app, name="schemas")
app.add_typer(snapshot.app, name="snapshot")
app.add_typer(catalogue.app, name="catalogue")
app.add_typer(catalogue.partners_app, name="partners")
app.add_typer(access.app, name="access")
app.add_typer(extract.app, name="extract")
app.add_typer(release.app, name="release")
app.add_typer(site.app, name="site")
app.command()(release.serve)
pipeline.register(app)
process.register(app)
status.register(app)
monitor.register(app)


def main() -> None:
    from ketenstroom.adapters.observability import configure_logging

    configure_logging()
    # our own progress lines (group joined and assigned after how long, state restored) for operators;
    # libraries, librdkafka's client log (ketenstroom.kafka.client) included, stay at WARNING
    logging.getLogger("ketenstroom").setLevel(logging.INFO)
    logging.getLogger("ketenstroom.kafka.client").setLevel(logging.WARNING)
    try:
        app()
    except SystemExit as done:  # every command ends here, with its exit code
        code = done.code
    else:
        code = 0
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None)
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    # Leave without tearing the C++ runtimes down: pyarrow 26's CPU thread pool, once used (any Parquet
    # read), aborts the interpreter's exit about one time in eight ("terminate called without an active
    # exception", exit -6) after the command has finished its work. Our clients are closed and flushed
    # by the commands themselves; only Python's own buffers and log handlers remain to flush.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
