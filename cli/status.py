"""``ketenstroom status``: one screen for an operator, and an exit code for a cron job or a probe.

Per partner: the last delivery and its outcome (from ``ops.deliveries``), the processor group's lag on
``raw.<partner>`` in records, and the open dead letters; when the delivery monitor (``ketenstroom
monitor``) answers, also the completeness of each open period and silence as the monitor judges them
(its event-time tables), else silence from the last receipt as before. Per period in the store: its
latest revision and status, staged files not yet sealed, and when the next seal is due. With
``--alertmanager`` (``KETENSTROOM_ALERTMANAGER_URL``), the alerts firing there. Exit 1 when something
needs action: a partner silent past its ``delivery_every_days``, open dead letters, a seal overdue, an
alert firing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import typer
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from cli.catalogue import load
from cli.snapshot import parse_as_of, policy_settings
from ketenstroom.adapters.kafka import all_partitions, high_watermarks, read_to_end
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.preflight import require_broker
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.calendar import period_bounds
from ketenstroom.contract import Topics
from ketenstroom.contract.deliveries import DeliveryEvent
from ketenstroom.errors import DeliveryError, KetenstroomError
from ketenstroom.settings import KafkaSettings, MonitorSettings, S3Settings, StorageSettings, TopicSettings

#: the sink seals once caught up and checks every minute: a seal this long past due is overdue
SEAL_SLACK = timedelta(hours=1)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _last_deliveries(kafka: KafkaSettings, topics: Topics) -> dict[str, DeliveryEvent]:
    try:
        partitions = all_partitions(kafka, topics.deliveries)
    except DeliveryError:
        return {}  # no deliveries topic yet: nothing delivered
    last: dict[str, DeliveryEvent] = {}
    for msg in read_to_end(kafka, partitions, group_id="ketenstroom-status", deadline_s=60):
        event = DeliveryEvent.decode(msg.value() or b"")
        last[event.partner] = event  # one partition: in the order they happened
    return last


def _monitor_views(settings: MonitorSettings, timeout: float = 3.0) -> dict[str, Any] | None:
    """The monitor's completeness and silence views, or None when it does not answer (or is still
    recovering its tables)."""
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host  # noqa: S104
    base = f"http://{host}:{settings.metrics_port}/views"
    try:
        with httpx.Client(timeout=timeout) as client:
            views = {name: client.get(f"{base}/{name}").json() for name in ("completeness", "silence")}
    except (httpx.HTTPError, ValueError):
        return None
    if any("status" in v for v in views.values()):  # {"status": "recovering"}
        return None
    return {"url": base.removesuffix("/views"), **views}


def _firing_alerts(url: str, timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """Alerts firing at Alertmanager (active, neither silenced nor inhibited), or None when it does not
    answer: name, partner (when the alert has one), severity, summary and since when."""
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/api/v2/alerts",
            params={"active": "true", "silenced": "false", "inhibited": "false"},
            timeout=timeout,
        )
        response.raise_for_status()
        alerts = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return sorted(
        (
            {
                "alertname": a["labels"].get("alertname", ""),
                "partner": a["labels"].get("partner"),
                "severity": a["labels"].get("severity"),
                "summary": a.get("annotations", {}).get("summary", ""),
                "since": a.get("startsAt"),
            }
            for a in alerts
        ),
        key=lambda a: (a["alertname"], a["partner"] or ""),
    )


def _alerts_report(alertmanager: str | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The report's ``alerts`` and a needs-action line per firing alert; (None, []) when no Alertmanager
    is named (a developer's local one must not judge a test's stack)."""
    if not alertmanager:
        return None, []
    firing = _firing_alerts(alertmanager)
    if firing is None:
        down = f"alertmanager at {alertmanager} does not answer (is `infra up --with-monitoring` running?)"
        return {"url": alertmanager, "up": False, "firing": []}, [down]
    needs = []
    for a in firing:
        who = f" ({a['partner']})" if a["partner"] else ""
        needs.append(f"alert {a['alertname']}{who}: {a['summary']}")
    return {"url": alertmanager, "up": True, "firing": firing}, needs


def _raw_lag(
    kafka: KafkaSettings, topics: Topics, partners: list[str], group_id: str
) -> dict[str, int | None]:
    """Per partner, high watermark minus the processor group's committed offset, summed over partitions
    (None when raw.<partner> does not exist)."""
    wanted: list[TopicPartition] = []
    lags: dict[str, int | None] = {}
    for partner in partners:
        try:
            wanted += all_partitions(kafka, topics.raw(partner))
            lags[partner] = 0
        except DeliveryError:
            lags[partner] = None
    if not wanted:
        return lags
    high = high_watermarks(kafka, wanted)
    consumer = Consumer(kafka.librdkafka(group_id=group_id, enable_auto_commit=False))
    try:
        committed = consumer.committed(wanted, timeout=10)
    finally:
        consumer.close()
    for tp in committed:
        end = high.get((tp.topic, tp.partition))
        partner = topics.partner_of(tp.topic)
        if end is None or lags[partner] is None:
            continue
        lags[partner] = (lags[partner] or 0) + max(0, end - max(tp.offset, 0))
    return lags


def collect(
    *,
    partners: list[str] | None,
    storage: str | None,
    now: datetime,
    group_id: str | None = None,
    alertmanager: str | None = None,
) -> dict[str, Any]:
    """Everything ``status`` shows, as plain JSON-able data, with ``needs_action`` (empty: all well)."""
    from ketenstroom.settings import ProcessorSettings
    from processors.dlq import summarise

    catalogue, kafka = load(), KafkaSettings()
    topics = Topics(TopicSettings().prefix)
    names = partners or sorted(catalogue.names)
    group = group_id or ProcessorSettings().app_id
    deliveries = _last_deliveries(kafka, topics)
    lags = _raw_lag(kafka, topics, names, group)
    monitor = _monitor_views(MonitorSettings())
    judged = {} if monitor is None else {r["partner"]: r for r in monitor["silence"]["partners"]}
    open_periods: dict[str, list[dict[str, Any]]] = {}
    for row in [] if monitor is None else monitor["completeness"]["periods"]:
        if row["open"]:
            open_periods.setdefault(row["partner"], []).append(
                {k: row[k] for k in ("period", "events", "reference", "basis", "ratio", "seal_due")}
            )
    needs: list[str] = []
    rows: list[dict[str, Any]] = []
    for name in names:
        every = catalogue.partner(name).delivery_every_days
        last = deliveries.get(name)
        silent = every is not None and (last is None or now - last.finished > timedelta(days=every))
        if name in judged:  # the monitor's word (its tables hold every receipt, by finish time)
            silent = bool(judged[name]["silent"])
        try:
            dead_open: int | None = summarise(kafka, topics, name).open
        except DeliveryError:
            dead_open = None  # no DLQ topic yet: nothing dead-lettered
        if silent:
            since = "never delivered" if last is None else f"last delivery {last.finished.isoformat()}"
            needs.append(f"{name}: silent past its {every:g}-day schedule ({since})")
        if dead_open:
            needs.append(f"{name}: {dead_open} open dead letters (ketenstroom dlq list -p {name})")
        rows.append(
            {
                "partner": name,
                "delivery_every_days": every,
                "last_delivery": None
                if last is None
                else {
                    "delivery_id": last.delivery_id,
                    "finished": last.finished.isoformat(),
                    "outcome": last.outcome,
                    "rows_read": last.rows_read,
                    "published": last.published,
                    "rejected": sum(last.rejected.values()),
                },
                "silent": silent,
                "silence_from": "monitor" if name in judged else "deliveries",
                # open periods' completeness from the monitor (None: the monitor is not running)
                "completeness": None if monitor is None else open_periods.get(name, []),
                "raw_lag_records": lags.get(name),
                "dlq_open": dead_open,
            }
        )
    settings = policy_settings(None, None)
    grace = timedelta(days=settings.grace_days)
    snapshots = Snapshots(ObjectStore(storage or StorageSettings().url, S3Settings()))
    periods: list[dict[str, Any]] = []
    next_due: datetime | None = None
    for period in snapshots.periods():
        manifests = snapshots.manifests(period)
        latest = manifests[-1] if manifests else None
        staged = len(snapshots.staged(period))
        _start, end = period_bounds(period)
        due = end + grace
        held = bool(latest and latest.status == "final" and staged)
        overdue = bool(staged) and not held and now >= due + SEAL_SLACK
        if staged and not held and now < due and (next_due is None or due < next_due):
            next_due = due
        if overdue:
            needs.append(
                f"{period}: {staged} staged files, seal due {due.isoformat()} (is the sink running?)"
            )
        periods.append(
            {
                "period": period,
                "state": latest.status if latest else ("staged" if staged else "open"),
                "revision": latest.revision if latest else None,
                "rows": latest.rows if latest else None,
                "staged_files": staged,
                "held_after_final": held,
                "seal_due": due.isoformat(),
                "seal_overdue": overdue,
            }
        )
    alerts, alert_needs = _alerts_report(alertmanager)
    needs += alert_needs
    return {
        "now": now.isoformat(),
        "processor_group": group,
        "alerts": alerts,
        "monitor": {"up": monitor is not None, "url": None if monitor is None else monitor["url"]},
        "partners": rows,
        "periods": periods,
        "next_seal_due": next_due.isoformat() if next_due else None,
        "needs_action": needs,
    }


def status(
    partner: list[str] | None = typer.Option(None, "--partner", "-p", help="Only these (default: all)."),
    storage: str | None = typer.Option(
        None, help="file://DIR or s3://BUCKET/PREFIX (default from settings)."
    ),
    now: str | None = typer.Option(None, help="Judge as if it were this moment (ISO); default now."),
    as_json: bool = typer.Option(False, "--json", help="The same as JSON, for scripts."),
    alertmanager: str | None = typer.Option(
        None,
        envvar="KETENSTROOM_ALERTMANAGER_URL",
        help="Also list the alerts firing at this Alertmanager (e.g. http://127.0.0.1:9691 of "
        "`infra up --with-monitoring`); each needs action.",
    ),
) -> None:
    """Deliveries, lag, dead letters, seals and firing alerts at a glance. Exit 1 when something needs
    action."""
    moment = parse_as_of(now) or datetime.now(UTC)
    try:
        require_broker(KafkaSettings())  # an unreachable cluster: one clear line, not a traceback
        report = collect(partners=partner or None, storage=storage, now=moment, alertmanager=alertmanager)
    except KetenstroomError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _render(report)
    raise typer.Exit(1 if report["needs_action"] else 0)


def _render(report: dict[str, Any]) -> None:
    table = Table(
        "partner",
        "last delivery",
        "outcome",
        "raw lag",
        "open DLQ",
        "open periods (monitor)",
        title="partners",
        title_justify="left",
    )
    for row in report["partners"]:
        last = row["last_delivery"]
        when = "never" if last is None else last["finished"][:19].replace("T", " ")
        table.add_row(
            row["partner"],
            f"[red]{when}[/red]" if row["silent"] else when,
            "" if last is None else f"{last['outcome']} ({last['published']}/{last['rows_read']})",
            "-" if row["raw_lag_records"] is None else f"{row['raw_lag_records']:,}",
            "-" if row["dlq_open"] is None else (f"[red]{row['dlq_open']}[/red]" if row["dlq_open"] else "0"),
            _completeness(row["completeness"]),
        )
    out.print(table)
    periods = Table(
        "period", "state", "rows", "staged files", "seal due", title="periods", title_justify="left"
    )
    for p in report["periods"]:
        periods.add_row(
            p["period"],
            p["state"] + (f" r{p['revision']}" if p["revision"] is not None else ""),
            "" if p["rows"] is None else f"{p['rows']:,}",
            str(p["staged_files"]) + (" (held: after final)" if p["held_after_final"] else ""),
            ("[red]OVERDUE[/red] " if p["seal_overdue"] else "") + p["seal_due"][:16].replace("T", " "),
        )
    out.print(periods)
    out.print(f"next seal due: {report['next_seal_due'] or '-'}")
    alerts = report.get("alerts")
    if alerts is not None and not alerts["up"]:
        out.print("alerts: Alertmanager does not answer")
    elif alerts is not None:
        names = [a["alertname"] + (f" ({a['partner']})" if a["partner"] else "") for a in alerts["firing"]]
        out.print(f"alerts firing: {', '.join(names) or 'none'}")
    for line in report["needs_action"]:
        out.print(f"[red]needs action:[/red] {line}")
    if not report["needs_action"]:
        out.print("[green]nothing needs action[/green]")


def _completeness(periods: list[dict[str, Any]] | None) -> str:
    if periods is None:
        return "monitor down"
    return ", ".join(
        f"{p['period']} {p['events']:,}" + ("" if p["ratio"] is None else f" ({p['ratio']:.0%})")
        for p in periods
    )


def register(app: typer.Typer) -> None:
    app.command()(status)
