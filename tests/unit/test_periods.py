from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ketenstroom.calendar import period_bounds, period_code
from ketenstroom.errors import ConfigurationError


@pytest.mark.parametrize(
    ("instant", "kind", "code"),
    [
        # New Year: 23:30 UTC on 31 Dec is already 1 Jan in Amsterdam (CET, UTC+1)
        (datetime(2025, 12, 31, 23, 30, tzinfo=UTC), "month", "2026MM01"),
        (datetime(2025, 12, 31, 22, 59, tzinfo=UTC), "year", "2025JJ00"),
        (datetime(2025, 12, 31, 23, 0, tzinfo=UTC), "year", "2026JJ00"),
        # summer time: 31 Mar 22:30 UTC is 1 Apr 00:30 CEST (UTC+2) -> April, Q2
        (datetime(2026, 3, 31, 22, 30, tzinfo=UTC), "month", "2026MM04"),
        (datetime(2026, 3, 31, 22, 30, tzinfo=UTC), "quarter", "2026KW02"),
        (datetime(2026, 3, 31, 21, 59, tzinfo=UTC), "quarter", "2026KW01"),
        # the night DST ends (25 Oct 2026) stays in October; 31 Oct 23:00 UTC is 1 Nov 00:00 CET
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "month", "2026MM10"),
        (datetime(2026, 10, 31, 23, 0, tzinfo=UTC), "month", "2026MM11"),
        (datetime(2026, 10, 31, 22, 59, tzinfo=UTC), "month", "2026MM10"),
    ],
)
def test_events_at_period_turns_land_in_the_local_period(instant: datetime, kind: str, code: str) -> None:
    assert period_code(instant, kind) == code  # type: ignore[arg-type]


def test_bounds_are_local_midnights_across_dst() -> None:
    start, end = period_bounds("2026MM03")
    assert start == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # CET
    assert end == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # CEST
    assert period_bounds("2026KW04") == (
        datetime(2026, 9, 30, 22, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
    )
    assert period_bounds("2026JJ00")[1] == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)


def test_every_instant_is_inside_the_bounds_of_its_own_period() -> None:
    instant = datetime(2026, 1, 1, tzinfo=UTC)
    while instant < datetime(2027, 1, 2, tzinfo=UTC):
        for kind in ("month", "quarter", "year"):
            start, end = period_bounds(period_code(instant, kind))  # type: ignore[arg-type]
            assert start <= instant < end
        instant += timedelta(hours=7)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_code(datetime(2026, 1, 1))
    with pytest.raises(ConfigurationError, match="2026MM07"):
        period_bounds("2026-07")
