"""The monitor's arithmetic, pure: completeness, trailing median, silence, DLQ spikes, event-time buckets.

Everything the monitor derives from its tables is computed here from plain numbers, so the rules are
unit-tested without Kafka. Times are epoch seconds (UTC); calendar rules (CBS periods, Amsterdam days)
come from :mod:`ketenstroom.calendar`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ketenstroom.calendar import local_date, period_bounds, period_code

HOUR_S = 3600
DAY_S = 86_400
#: earlier periods the trailing median looks at when there is no same period a year earlier
TRAILING_PERIODS = 6


def period_of(epoch_s: float) -> str:
    """The CBS month of an event time (Europe/Amsterdam local date)."""
    return period_code(datetime.fromtimestamp(epoch_s, UTC))


def day_of(epoch_s: float) -> str:
    """The Amsterdam calendar date of an instant, ISO (a delivery's day)."""
    return local_date(datetime.fromtimestamp(epoch_s, UTC)).isoformat()


def hour_of(epoch_s: float) -> int:
    """The UTC hour bucket (epoch seconds of its start) of an instant."""
    return int(epoch_s // HOUR_S) * HOUR_S


def year_earlier(period: str) -> str:
    """The same period a year earlier: ``2026MM03`` -> ``2025MM03``."""
    return f"{int(period[:4]) - 1}{period[4:]}"


def seal_due(period: str, grace_days: float) -> float:
    """When the sink seals ``period``: its end plus the grace (epoch seconds)."""
    _start, end = period_bounds(period)
    return end.timestamp() + grace_days * DAY_S


@dataclass(frozen=True)
class Completeness:
    partner: str
    period: str
    events: int
    #: the count it is measured against (None: no earlier period to compare with)
    reference: float | None
    #: "year-earlier", "trailing-median" or None
    basis: str | None

    @property
    def ratio(self) -> float | None:
        if self.reference is None or self.reference <= 0:
            return None
        return self.events / self.reference


def completeness(
    partner: str, period: str, totals: Mapping[str, int], trailing: int = TRAILING_PERIODS
) -> Completeness:
    """Events so far in ``period`` against the same period a year earlier when that has events, else
    against the median of the (at most ``trailing``) latest earlier periods that have events.

    ``totals`` maps period -> events of this partner (all event types)."""
    events = totals.get(period, 0)
    last_year = totals.get(year_earlier(period), 0)
    if last_year > 0:
        return Completeness(partner, period, events, float(last_year), "year-earlier")
    earlier = sorted(p for p, n in totals.items() if p < period and n > 0)[-trailing:]
    if not earlier:
        return Completeness(partner, period, events, None, None)
    return Completeness(
        partner, period, events, float(statistics.median(totals[p] for p in earlier)), "trailing-median"
    )


@dataclass(frozen=True)
class Silence:
    partner: str
    every_days: float | None
    last_delivery: float | None
    #: last delivery + the declared interval (None: no schedule, or never delivered)
    deadline: float | None
    silent: bool


def silence(partner: str, every_days: float | None, last_delivery: float | None, now: float) -> Silence:
    """Silent: a schedule is declared and no delivery came within it (never delivering counts)."""
    if every_days is None:
        return Silence(partner, None, last_delivery, None, False)
    if last_delivery is None:
        return Silence(partner, every_days, None, None, True)
    deadline = last_delivery + every_days * DAY_S
    return Silence(partner, every_days, last_delivery, deadline, now > deadline)


@dataclass(frozen=True)
class SpikeRule:
    #: hours before the current one that make the baseline
    trailing_hours: int = 24
    #: a spike is at least this many times the baseline ...
    factor: float = 5.0
    #: ... and at least this many records in the last hour (a few dead letters are no spike)
    min_records: int = 10


@dataclass(frozen=True)
class DlqRate:
    partner: str
    last_hour: int
    #: mean dead letters per hour over the trailing hours (zeros included)
    baseline: float
    spike: bool


def dlq_rate(partner: str, hourly: Mapping[int, int], now: float, rule: SpikeRule = SpikeRule()) -> DlqRate:
    """Dead letters in the last 60 minutes against the mean of the trailing hours before them.

    The table counts per whole UTC hour, so the last 60 minutes are the hour in progress plus the
    share of the previous hour still inside the window (assumed evenly spread): a burst at 10:59
    still counts at 11:01, and fades out by 11:59."""
    current = hour_of(now)
    left_of_previous = 1.0 - (now - current) / HOUR_S
    last_hour = hourly.get(current, 0) + round(hourly.get(current - HOUR_S, 0) * left_of_previous)
    trailing = [hourly.get(current - (i + 2) * HOUR_S, 0) for i in range(rule.trailing_hours)]
    baseline = sum(trailing) / len(trailing) if trailing else 0.0
    spike = last_hour >= rule.min_records and last_hour > rule.factor * baseline
    return DlqRate(partner, last_hour, baseline, spike)


def recent_periods(periods: Iterable[str], keep: int = 3) -> list[str]:
    """The ``keep`` latest periods (labels stay bounded: open and recent periods only)."""
    return sorted(set(periods))[-keep:]
