"""The one command surface, ``ketenstroom``, for people and CI. A leaf: nothing imports it."""

from __future__ import annotations

import logging

import typer

from cli import access, catalogue, extract, infra, pipeline, process, release, schemas, site, snapshot

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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # our own progress lines (group joined and assigned after how long, state restored) for operators;
    # libraries, librdkafka's client log (ketenstroom.kafka.client) included, stay at WARNING
    logging.getLogger("ketenstroom").setLevel(logging.INFO)
    logging.getLogger("ketenstroom.kafka.client").setLevel(logging.WARNING)
    app()
