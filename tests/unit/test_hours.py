"""``sinks.hours.HourTable`` gives what ``HourCalendar`` gives, for every instant of a column."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from ketenstroom.calendar import HourCalendar
from sinks import hours
from sinks.hours import HourTable


def _expected(calendar: HourCalendar, ms: np.ndarray) -> tuple[list[str], list[int]]:
    found = [calendar(int(m)) for m in ms.tolist()]
    return [p for p, _d in found], [(d - datetime(1970, 1, 1).date()).days for _p, d in found]


@pytest.mark.parametrize("kind", ["month", "quarter", "year"])
def test_columns_match_the_calendar_across_batches_and_dst(kind: str) -> None:
    rng = np.random.default_rng(7)
    table = HourTable(HourCalendar(kind))  # type: ignore[arg-type]
    start = int(datetime(2025, 3, 29, tzinfo=UTC).timestamp() * 1000)  # a DST change inside
    for width_days in (3, 400, 2, 40):  # batches that widen the span downwards and upwards
        ms = start + rng.integers(-width_days * 86_400_000, width_days * 86_400_000, 2_000)
        period, day = table.lookup(ms)
        periods, days = _expected(HourCalendar(kind), ms)  # type: ignore[arg-type]
        assert [table.periods[i] for i in period.tolist()] == periods
        assert day.tolist() == days


def test_a_span_wider_than_the_bound_is_looked_up_per_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hours, "MAX_SPAN_HOURS", 48)
    table = HourTable(HourCalendar("month"))
    near = int(datetime(2026, 1, 31, 23, tzinfo=UTC).timestamp() * 1000)
    ms = np.array([near, near + 3_600_000, near + 90 * 86_400_000, near - 365 * 86_400_000])
    period, day = table.lookup(ms)
    periods, days = _expected(HourCalendar("month"), ms)
    assert [table.periods[i] for i in period.tolist()] == periods
    assert day.tolist() == days
    assert periods[0] == "2026MM02"  # Amsterdam's 1 February, not UTC's January
    assert table.lookup(np.array([near + 90 * 86_400_000]))[0].tolist() == [period[2]]


def test_an_empty_column() -> None:
    period, day = HourTable(HourCalendar("month")).lookup(np.empty(0, np.int64))
    assert len(period) == len(day) == 0
