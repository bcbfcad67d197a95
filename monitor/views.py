"""From the monitor's table contents to its JSON views and Prometheus metrics, pure.

The faust app copies its tables into a :class:`TableContents` (plain dicts) every refresh and calls
:func:`build_views`; the HTTP thread serves the result as it is, and :class:`MonitorCollector` turns
the same document into the metric families of the metric contract. Nothing here talks to Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.figures import SpikeRule, completeness, dlq_rate, period_of, recent_periods, seal_due, silence

SEP = "|"


def key(*parts: object) -> str:
    """A table key: the parts joined by ``|`` (partners, periods, days and event types never hold one)."""
    return SEP.join(str(p) for p in parts)


@dataclass
class TableContents:
    """Plain copies of the monitor's faust tables."""

    #: "partner|period|event_type" -> curated events (event time)
    period_events: dict[str, int] = field(default_factory=dict)
    #: "partner|day" -> {"deliveries": n, "accepted": rows, "rejected": rows} (the delivery's local day)
    deliveries: dict[str, dict[str, int]] = field(default_factory=dict)
    #: partner -> the latest delivery by its finish time: {"finished": epoch s, "delivery_id", "outcome"}
    last_delivery: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: partner -> {"<hour epoch s>": dead letters, "oldest": epoch s of the oldest dead letter}
    dlq: dict[str, dict[str, float]] = field(default_factory=dict)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def build_views(
    tables: TableContents,
    *,
    schedules: Mapping[str, float | None],
    now: float,
    grace_days: float,
    rule: SpikeRule = SpikeRule(),
    keep_periods: int = 3,
) -> dict[str, Any]:
    """Every view, keyed by name (``completeness``, ``silence``, ``dlq``, ``deliveries``), plus the
    totals per source. ``schedules``: each catalogue partner's declared delivery interval in days."""
    partners = sorted(schedules)
    by_partner: dict[str, dict[str, dict[str, int]]] = {}
    for k, n in tables.period_events.items():
        partner, period, event_type = k.split(SEP, 2)
        by_partner.setdefault(partner, {}).setdefault(period, {})[event_type] = n
    current = period_of(now)
    rows: list[dict[str, Any]] = []
    for partner in sorted(set(partners) | set(by_partner)):
        periods = by_partner.get(partner, {})
        totals = {p: sum(types.values()) for p, types in periods.items()}
        recent = set(recent_periods(periods, keep_periods))
        for period in sorted(periods):
            c = completeness(partner, period, totals)
            due = seal_due(period, grace_days)
            rows.append(
                {
                    "partner": partner,
                    "period": period,
                    "events": c.events,
                    "by_event_type": dict(sorted(periods[period].items())),
                    "reference": c.reference,
                    "basis": c.basis,
                    "ratio": c.ratio,
                    "seal_due": _iso(due),
                    "open": period >= current or now < due,
                    "recent": period in recent,
                }
            )
    silences: list[dict[str, Any]] = []
    for partner in partners:
        last = tables.last_delivery.get(partner)
        s = silence(partner, schedules[partner], None if last is None else float(last["finished"]), now)
        silences.append(
            {
                "partner": partner,
                "delivery_every_days": s.every_days,
                "last_delivery": _iso(s.last_delivery),
                "last_delivery_id": None if last is None else last.get("delivery_id"),
                "last_outcome": None if last is None else last.get("outcome"),
                "deadline": _iso(s.deadline),
                "silent": s.silent,
            }
        )
    dlqs: list[dict[str, Any]] = []
    for partner in sorted(set(partners) | set(tables.dlq)):
        found = tables.dlq.get(partner, {})
        hourly = {int(h): int(n) for h, n in found.items() if h != "oldest"}
        rate = dlq_rate(partner, hourly, now, rule)
        oldest = found.get("oldest")
        dlqs.append(
            {
                "partner": partner,
                "records_total": sum(hourly.values()),
                "last_hour": rate.last_hour,
                "baseline_per_hour": rate.baseline,
                "spike": rate.spike,
                "oldest": _iso(oldest),
                "oldest_age_seconds": None if oldest is None else max(0.0, now - oldest),
                "hourly": {_iso(h): n for h, n in sorted(hourly.items())[-(rule.trailing_hours + 2) :]},
            }
        )
    days: dict[str, dict[str, dict[str, int]]] = {}
    for k, counts in tables.deliveries.items():
        partner, day = k.split(SEP, 1)
        days.setdefault(partner, {})[day] = dict(counts)
    deliveries = [
        {
            "partner": partner,
            "deliveries_total": sum(d["deliveries"] for d in days.get(partner, {}).values()),
            "rows_accepted_total": sum(d["accepted"] for d in days.get(partner, {}).values()),
            "rows_rejected_total": sum(d["rejected"] for d in days.get(partner, {}).values()),
            "days": dict(sorted(days.get(partner, {}).items())),
        }
        for partner in sorted(set(partners) | set(days))
    ]
    return {
        "now": _iso(now),
        "completeness": {"now": _iso(now), "grace_days": grace_days, "periods": rows},
        "silence": {"now": _iso(now), "partners": silences},
        "dlq": {"now": _iso(now), "partners": dlqs},
        "deliveries": {"now": _iso(now), "partners": deliveries},
        "events_total": {
            "deliveries": sum(d["deliveries_total"] for d in deliveries),
            "curated": sum(tables.period_events.values()),
            "dlq": sum(d["records_total"] for d in dlqs),
        },
    }


class MonitorCollector(Collector):
    """The metric contract's families from the latest views (set by the app after each refresh)."""

    def __init__(self) -> None:
        self.views: dict[str, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ketenstroom_monitor_up", "1 while the delivery monitor runs")
        up.add_metric([], 1)
        yield up
        views = self.views
        if views is None:
            return
        p = "ketenstroom_monitor_"
        events = GaugeMetricFamily(
            p + "period_events",
            "Curated events so far per measurement period (event time), partner and event type",
            labels=["partner", "period", "event_type"],
        )
        ratio = GaugeMetricFamily(
            p + "period_completeness_ratio",
            "Events so far / the same period a year earlier (else the trailing median of earlier periods)",
            labels=["partner", "period"],
        )
        due = GaugeMetricFamily(
            p + "period_seal_due_timestamp_seconds", "When the period's seal is due", labels=["period"]
        )
        dues: dict[str, str] = {}
        for row in views["completeness"]["periods"]:
            if not row["recent"]:
                continue
            for event_type, n in row["by_event_type"].items():
                events.add_metric([row["partner"], row["period"], event_type], n)
            if row["ratio"] is not None:
                ratio.add_metric([row["partner"], row["period"]], row["ratio"])
            dues[row["period"]] = row["seal_due"]
        for period, when in sorted(dues.items()):
            due.add_metric([period], datetime.fromisoformat(when).timestamp())
        yield from (events, ratio, due)

        yield from _silence(views["silence"]["partners"])
        yield from _deliveries(views["deliveries"]["partners"])
        yield from _dlq(views["dlq"]["partners"])
        total = CounterMetricFamily(p + "events", "Records the monitor has counted", labels=["source"])
        for source, n in sorted(views["events_total"].items()):
            total.add_metric([source], n)
        yield total


def _silence(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    p = "ketenstroom_monitor_"
    last = GaugeMetricFamily(
        p + "partner_last_delivery_timestamp_seconds", "Latest delivery's finish time", labels=["partner"]
    )
    deadline = GaugeMetricFamily(
        p + "partner_delivery_deadline_timestamp_seconds",
        "Latest delivery + the partner's declared delivery interval",
        labels=["partner"],
    )
    silent = GaugeMetricFamily(
        p + "partner_silent", "1: no delivery within the declared schedule", labels=["partner"]
    )
    for row in rows:
        if row["last_delivery"] is not None:
            last.add_metric([row["partner"]], datetime.fromisoformat(row["last_delivery"]).timestamp())
        if row["deadline"] is not None:
            deadline.add_metric([row["partner"]], datetime.fromisoformat(row["deadline"]).timestamp())
        silent.add_metric([row["partner"]], 1 if row["silent"] else 0)
    yield from (last, deadline, silent)


def _deliveries(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    p = "ketenstroom_monitor_"
    deliveries = CounterMetricFamily(p + "deliveries", "Deliveries received", labels=["partner"])
    delivered = CounterMetricFamily(
        p + "delivery_rows", "Delivered rows by outcome", labels=["partner", "outcome"]
    )
    for row in rows:
        deliveries.add_metric([row["partner"]], row["deliveries_total"])
        delivered.add_metric([row["partner"], "accepted"], row["rows_accepted_total"])
        delivered.add_metric([row["partner"], "rejected"], row["rows_rejected_total"])
    yield from (deliveries, delivered)


def _dlq(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    p = "ketenstroom_monitor_"
    last_hour = GaugeMetricFamily(
        p + "dlq_records_last_hour", "Dead letters in the last 60 minutes", labels=["partner"]
    )
    spike = GaugeMetricFamily(
        p + "dlq_spike", "1: dead letters well above the trailing hours", labels=["partner"]
    )
    oldest = GaugeMetricFamily(
        p + "oldest_dead_letter_age_seconds", "Age of the oldest dead letter seen", labels=["partner"]
    )
    for row in rows:
        last_hour.add_metric([row["partner"]], row["last_hour"])
        spike.add_metric([row["partner"]], 1 if row["spike"] else 0)
        if row["oldest_age_seconds"] is not None:
            oldest.add_metric([row["partner"]], row["oldest_age_seconds"])
    yield from (last_hour, spike, oldest)
