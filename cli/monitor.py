"""``ketenstroom monitor``: the delivery monitor (completeness, silence, DLQ spikes) as a faust worker."""

from __future__ import annotations

import typer
from rich.console import Console

from cli.catalogue import load
from cli.snapshot import policy_settings
from ketenstroom.contract import Topics
from ketenstroom.errors import KetenstroomError
from ketenstroom.settings import KafkaSettings, MonitorSettings, RegistrySettings, TopicSettings

console = Console(stderr=True, soft_wrap=True)


def monitor(
    port: int | None = typer.Option(
        None, help="Port of /metrics, /health and /views/* (default KETENSTROOM_MONITOR_METRICS_PORT, 9466)."
    ),
) -> None:
    """Watch deliveries, the curated stream and the DLQs: period completeness per partner, partner
    silence, DLQ spikes, as Prometheus metrics and JSON views. Runs until SIGTERM or Ctrl-C (exit 0)."""
    from monitor.run import discover, run

    catalogue = load()
    settings = MonitorSettings()
    if port is not None:
        settings = settings.model_copy(update={"metrics_port": port})
    topic_settings = TopicSettings()
    topics, kafka = Topics(topic_settings.prefix), KafkaSettings()
    schedules = {name: catalogue.partner(name).delivery_every_days for name in sorted(catalogue.names)}
    try:
        sources = discover(kafka, topics, schedules, policy_settings(None, None).grace_days)
        code = run(
            kafka=kafka,
            registry=RegistrySettings(),
            topics=topics,
            settings=settings,
            sources=sources,
            changelog_config=topic_settings.retention().state(),
        )
    except KetenstroomError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(monitor)
