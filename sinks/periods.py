"""One measurement period for every partner, by event time in Europe/Amsterdam, coded as CBS does.

``2026MM07`` (month), ``2026KW03`` (quarter), ``2026JJ00`` (year). Pure functions.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from ketenstroom.errors import ConfigurationError

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
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
