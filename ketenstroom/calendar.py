"""The chain's calendar, in one place: local dates and measurement periods in Europe/Amsterdam.

One measurement period for every partner, by event time, coded as CBS does: ``2026MM07`` (month),
``2026KW03`` (quarter), ``2026JJ00`` (year). Event times are UTC instants; every rule that needs a
calendar date (period, ``event_date``, age at the event, lead times in days, a terminology table's
validity) takes the Europe/Amsterdam date from here. Pure functions.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from ketenstroom.errors import ConfigurationError

TIMEZONE = "Europe/Amsterdam"
AMSTERDAM = ZoneInfo(TIMEZONE)
PeriodKind = Literal["month", "quarter", "year"]
_CODE = re.compile(r"^(\d{4})(MM|KW|JJ)(\d{2})$")


def period_code(moment: datetime, kind: PeriodKind = "month") -> str:
    """The CBS period code of the local (Europe/Amsterdam) date of ``moment`` (which must be aware)."""
    if moment.tzinfo is None:
        raise ValueError("period_code needs an aware datetime (event times are UTC instants)")
    local = moment.astimezone(AMSTERDAM)
    if kind == "month":
        return f"{local.year}MM{local.month:02d}"
    if kind == "quarter":
        return f"{local.year}KW{(local.month - 1) // 3 + 1:02d}"
    if kind == "year":
        return f"{local.year}JJ00"
    raise ConfigurationError(f"period kind {kind!r} is not one of month, quarter, year")


def period_bounds(code: str) -> tuple[datetime, datetime]:
    """[start, end) of a period as UTC instants (local midnights, so DST is accounted for)."""
    match = _CODE.match(code)
    if match is None:
        raise ConfigurationError(f"{code!r} is not a CBS period code like 2026MM07, 2026KW03 or 2026JJ00")
    year, kind, number = int(match[1]), match[2], int(match[3])
    if kind == "MM":
        start_month, months = number, 1
    elif kind == "KW":
        start_month, months = 3 * (number - 1) + 1, 3
    else:
        start_month, months = 1, 12
    end_year, end_month = year + (start_month - 1 + months) // 12, (start_month - 1 + months) % 12 + 1
    start = datetime(year, start_month, 1, tzinfo=AMSTERDAM)
    end = datetime(end_year, end_month, 1, tzinfo=AMSTERDAM)
    return start.astimezone(UTC), end.astimezone(UTC)


def local_date(moment: datetime) -> date:
    """The Amsterdam calendar date of an aware instant."""
    if moment.tzinfo is None:
        raise ValueError("local_date needs an aware datetime (event times are UTC instants)")
    return moment.astimezone(AMSTERDAM).date()


class HourCalendar:
    """Period and local date of epoch milliseconds, cached per UTC hour.

    Europe/Amsterdam is a whole number of hours from UTC, so every local midnight starts a UTC hour:
    period and date are the same for a whole UTC hour, and a stream of events needs one zone
    conversion per hour instead of one per event.
    """

    def __init__(self, kind: PeriodKind = "month") -> None:
        self.kind = kind
        self._hours: dict[int, tuple[str, date]] = {}

    def __call__(self, epoch_ms: int) -> tuple[str, date]:
        hour = epoch_ms // 3_600_000
        found = self._hours.get(hour)
        if found is None:
            moment = datetime.fromtimestamp(hour * 3600, tz=UTC)
            found = self._hours[hour] = (period_code(moment, self.kind), local_date(moment))
        return found
