"""The delivery monitor's arithmetic: completeness (year earlier, else trailing median), silence against
the declared schedule, DLQ spikes against the trailing hours, event-time buckets, and the metric names
and labels of the metric contract built from table contents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.figures import (
    DAY_S,
    HOUR_S,
    SpikeRule,
    completeness,
    day_of,
    dlq_rate,
    hour_of,
    period_of,
    seal_due,
    silence,
)
from monitor.views import MonitorCollector, TableContents, build_views, key

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC).timestamp()


def test_completeness_against_the_same_period_a_year_earlier() -> None:
    totals = {"2025MM11": 200, "2026MM09": 10, "2026MM10": 20, "2026MM11": 150}
    c = completeness("om", "2026MM11", totals)
    assert (c.events, c.reference, c.basis) == (150, 200.0, "year-earlier")
    assert c.ratio == pytest.approx(0.75)


def test_completeness_falls_back_to_the_trailing_median_of_earlier_periods() -> None:
    # no 2025MM11: the median of the latest earlier periods (6), later periods ignored
    totals = {
        f"2026MM{m:02d}": n for m, n in zip(range(1, 11), [1, 2, 3, 100, 40, 50, 60, 70, 80, 90], strict=True)
    }
    totals["2026MM11"] = 52
    totals["2026MM12"] = 1000  # after the period: not history
    c = completeness("om", "2026MM11", totals)
    assert c.basis == "trailing-median"
    assert c.reference == 65.0  # the six latest earlier ones, May..October: 40, 50, 60, 70, 80, 90
    assert c.ratio == pytest.approx(52 / 65)
    assert completeness("om", "2026MM11", totals, trailing=3).reference == 80.0


def test_completeness_without_history_has_no_ratio() -> None:
    c = completeness("om", "2026MM01", {"2026MM01": 5, "2025MM12": 0})
    assert (c.reference, c.basis, c.ratio) == (None, None, None)


def test_silence_follows_the_declared_schedule() -> None:
    last = NOW - 2 * DAY_S
    assert silence("om", 1, last, NOW).silent
    assert silence("om", 1, last, NOW).deadline == last + DAY_S
    assert not silence("halt", 7, last, NOW).silent
    assert silence("om", 1, None, NOW).silent  # never delivered on a schedule: silent
    assert not silence("x", None, None, NOW).silent  # no schedule agreed: never silent
    assert not silence("om", 1, NOW - DAY_S + 1, NOW).silent


def test_a_burst_is_a_spike_a_steady_rate_is_not() -> None:
    rule = SpikeRule(trailing_hours=24, factor=5, min_records=10)
    current = hour_of(NOW)
    steady = {current - h * HOUR_S: 20 for h in range(0, 30)}
    rate = dlq_rate("om", steady, NOW, rule)
    assert rate.baseline == 20 and not rate.spike
    # half an hour into the hour: the current bucket plus half the previous one
    assert rate.last_hour == 20 + 10
    burst = {**{current - h * HOUR_S: 2 for h in range(2, 26)}, current: 40}
    assert dlq_rate("om", burst, NOW, rule).spike
    assert not dlq_rate("om", {current: 9}, NOW, rule).spike  # too few to matter
    assert dlq_rate("om", {current: 10}, NOW, rule).spike  # from nothing to ten
    # a burst in the previous hour fades out as the hour passes
    early = datetime(2026, 11, 29, 12, 1, tzinfo=UTC).timestamp()
    late = datetime(2026, 11, 29, 12, 59, tzinfo=UTC).timestamp()
    previous = {hour_of(early) - HOUR_S: 60}
    assert dlq_rate("om", previous, early, rule).spike
    assert not dlq_rate("om", previous, late, rule).spike


def test_event_time_buckets_use_the_amsterdam_calendar() -> None:
    # 31 March 23:30 UTC is 1 April 01:30 in Amsterdam (summer time): April's period and day
    moment = datetime(2026, 3, 31, 23, 30, tzinfo=UTC).timestamp()
    assert period_of(moment) == "2026MM04"
    assert day_of(moment) == "2026-04-01"
    assert hour_of(moment) == datetime(2026, 3, 31, 23, tzinfo=UTC).timestamp()
    # March ends at local midnight (22:00 UTC on 31 March, summer time); the seal is due 14 days later
    assert seal_due("2026MM03", 14) == datetime(2026, 4, 14, 22, tzinfo=UTC).timestamp()


def _tables() -> TableContents:
    tables = TableContents()
    for month, n in [(8, 40), (9, 50), (10, 60), (11, 30)]:
        tables.period_events[key("om", f"2026MM{month:02d}", "nl.ketenstroom.om.CaseDecision")] = n
    tables.period_events[key("om", "2026MM11", "nl.ketenstroom.om.CaseRegistered")] = 3
    tables.deliveries[key("om", "2026-11-28")] = {"deliveries": 2, "accepted": 90, "rejected": 4}
    tables.last_delivery["om"] = {"finished": NOW - 3600, "delivery_id": "d2", "outcome": "delivered"}
    tables.dlq["politie"] = {str(hour_of(NOW)): 25.0, "oldest": NOW - 7200}
    return tables


def test_views_and_metrics_from_table_contents() -> None:
    views = build_views(
        _tables(), schedules={"om": 1, "politie": 1, "halt": None}, now=NOW, grace_days=14, keep_periods=3
    )
    by_period = {(r["partner"], r["period"]): r for r in views["completeness"]["periods"]}
    november = by_period[("om", "2026MM11")]
    assert november["events"] == 33 and november["reference"] == 50.0 and november["open"]
    assert not by_period[("om", "2026MM08")]["recent"] and by_period[("om", "2026MM09")]["recent"]
    assert not by_period[("om", "2026MM09")]["open"]  # sealed on 14 October
    silent = {r["partner"]: r["silent"] for r in views["silence"]["partners"]}
    assert silent == {"halt": False, "om": False, "politie": True}
    assert views["events_total"] == {"deliveries": 2, "curated": 183, "dlq": 25}

    collector = MonitorCollector()
    collector.views = views
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    m = "ketenstroom_monitor_"
    assert samples[(m + "period_completeness_ratio", (("partner", "om"), ("period", "2026MM11")))] == 33 / 50
    assert (m + "period_events", (("event_type", "nl.ketenstroom.om.CaseDecision"), ("partner", "om"), ("period", "2026MM08"))) not in samples  # fmt: skip
    assert samples[(m + "partner_silent", (("partner", "politie"),))] == 1
    assert (
        samples[(m + "partner_delivery_deadline_timestamp_seconds", (("partner", "om"),))]
        == NOW - 3600 + DAY_S
    )
    assert samples[(m + "deliveries_total", (("partner", "om"),))] == 2
    assert samples[(m + "delivery_rows_total", (("outcome", "rejected"), ("partner", "om")))] == 4
    assert samples[(m + "dlq_records_last_hour", (("partner", "politie"),))] == 25
    assert samples[(m + "dlq_spike", (("partner", "politie"),))] == 1
    assert samples[(m + "oldest_dead_letter_age_seconds", (("partner", "politie"),))] == 7200
    assert samples[(m + "events_total", (("source", "curated"),))] == 183
    assert samples[(m + "period_seal_due_timestamp_seconds", (("period", "2026MM11"),))] == seal_due(
        "2026MM11", 14
    )
    assert samples[(m + "up", ())] == 1
    periods = {dict(labels).get("period") for name, labels in samples if "period" in dict(labels)}
    assert periods == {"2026MM09", "2026MM10", "2026MM11"}  # bounded: the three latest


def test_a_record_delivered_again_is_counted_once() -> None:
    from monitor.app import Monitor

    table: dict[str, dict[str, int]] = {}
    for offset in (0, 1, 2):
        Monitor.add(table, "om|2026MM11|t|0", offset, {"n": 1})
    # after a crash faust delivers offsets 1 and 2 again (processed, not committed), then 3
    for offset in (1, 2, 3):
        Monitor.add(table, "om|2026MM11|t|0", offset, {"n": 1})
    assert table == {"om|2026MM11|t|0": {"n": 4, "next": 4}}
    Monitor.add(table, "om|2026-11-29", 7, {"deliveries": 1, "accepted": 90, "rejected": 3})
    Monitor.add(table, "om|2026-11-29", 7, {"deliveries": 1, "accepted": 90, "rejected": 3})
    assert table["om|2026-11-29"] == {"deliveries": 1, "accepted": 90, "rejected": 3, "next": 8}
