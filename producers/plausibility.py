"""Plausibility rules of a record type, declared next to its columns in ``partners/<p>/mapping.toml``.

A value can be well-formed and still impossible: an event dated 2062 for 2026 (a typo in the year), a
registration before the event it registers, a suspect born after the offence or aged 3 at it. Each
record type may declare, in ``[records.<type>.plausibility]``::

    max_clock_skew_minutes = 60        # event time at most this long after the delivery time
    event_not_before = 2000-01-01      # no event (local date) before this day
    registration_not_before_event = true   # registration not before the event's (local) day
    birth_before_event = true          # birth date not after the event's (local) date
    age_at_event = [12, 100]           # age in whole years at the event's (local) date

Every rule is checked at publish and rejects the row with a reason of its own (``REASONS``). Both
paths call the same ``Plausibility.violation`` on the same numbers (``timestamp-millis``, local dates
from ``local_day``): the reference path after the pydantic model, the fast path
(``producers.fastpath``) with values it works out once per distinct string. A registration is
compared by day, because many partners write it as a date without a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from fastavro.write import LOGICAL_WRITERS

from ketenstroom.calendar import AMSTERDAM
from ketenstroom.errors import ConfigurationError

EVENT, REGISTRATION, BIRTH = "metadata.event_time", "metadata.registration_time", "suspect.birth_date"
#: Reject reason of each rule.
REASONS = {
    "max_clock_skew_minutes": "event-in-future",
    "event_not_before": "event-before-floor",
    "registration_not_before_event": "registered-before-event",
    "birth_before_event": "born-after-event",
    "age_at_event": "age-out-of-range",
}
_MINUTE_MS = 60_000
_TO_MILLIS = LOGICAL_WRITERS["long-timestamp-millis"]


_HOUR_MS = 3_600_000
_DAYS: dict[int, tuple[date, int]] = {}  # UTC hour -> (local date, local midnight in ms)


def millis(moment: datetime) -> int:
    """A moment as Avro's ``timestamp-millis`` number: the fast path's ``moments`` gives the same."""
    return int(_TO_MILLIS(moment, {}))


def local_day(ms: int) -> tuple[date, int]:
    """``(local date, its midnight in ms)`` in Amsterdam of the moment ``ms``.

    Amsterdam's midnight and its clock changes fall on whole UTC hours, so every moment of one UTC
    hour has the same local date: worked out once per hour, with ``zoneinfo``.
    """
    hour = ms // _HOUR_MS
    found = _DAYS.get(hour)
    if found is None:
        local = datetime.fromtimestamp(hour * 3600, AMSTERDAM)
        if len(_DAYS) >= 1_000_000:
            _DAYS.clear()
        found = _DAYS[hour] = (local.date(), day_start_ms(local.date()))
    return found


@lru_cache(maxsize=4096)
def day_start_ms(day: date) -> int:
    """Local midnight of ``day`` in Amsterdam, in ms (the clocks never change at midnight there)."""
    return millis(datetime(day.year, day.month, day.day, tzinfo=AMSTERDAM))


def age(birth: date, day: date) -> int:
    """Whole years between ``birth`` and ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def anniversary(birth: date, years: int) -> date:
    """The first day on which ``age(birth, day) == years`` (29 February: 1 March in other years)."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


@dataclass(frozen=True)
class Plausibility:
    """The declared rules of one record type; ``None``/``False`` means the rule is not declared."""

    max_clock_skew_minutes: int | None = None
    event_not_before: date | None = None
    registration_not_before_event: bool = False
    birth_before_event: bool = False
    age_at_event: tuple[int, int] | None = None

    @classmethod
    def from_toml(cls, data: dict[str, Any], *, where: str, mapped: set[str]) -> Plausibility:
        """The ``[records.<type>.plausibility]`` table; refuses unknown keys and rules on unmapped fields."""
        unknown = sorted(set(data) - set(REASONS))
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown plausibility rules {unknown}; known: {', '.join(sorted(REASONS))}"
            )
        skew = data.get("max_clock_skew_minutes")
        floor = data.get("event_not_before")
        ages = data.get("age_at_event")
        if skew is not None and (not isinstance(skew, int) or isinstance(skew, bool) or skew < 0):
            raise ConfigurationError(f"{where}: max_clock_skew_minutes must be minutes >= 0, got {skew!r}")
        if floor is not None and (not isinstance(floor, date) or isinstance(floor, datetime)):
            raise ConfigurationError(
                f"{where}: event_not_before must be a TOML date like 2000-01-01, got {floor!r}"
            )
        if ages is not None and not (
            isinstance(ages, list)
            and len(ages) == 2
            and all(isinstance(a, int) for a in ages)
            and ages[0] <= ages[1]
        ):
            raise ConfigurationError(f"{where}: age_at_event must be [lowest, highest] years, got {ages!r}")
        rules = cls(
            max_clock_skew_minutes=skew,
            event_not_before=floor,
            registration_not_before_event=bool(data.get("registration_not_before_event", False)),
            birth_before_event=bool(data.get("birth_before_event", False)),
            age_at_event=(ages[0], ages[1]) if ages is not None else None,
        )
        needs = {EVENT} if rules.declared else set()
        if rules.registration_not_before_event:
            needs.add(REGISTRATION)
        if rules.birth_before_event or rules.age_at_event:
            needs.add(BIRTH)
        lacking = sorted(needs - mapped)
        if lacking:
            raise ConfigurationError(f"{where}: plausibility rules need {lacking}, which have no column")
        return rules

    @property
    def declared(self) -> bool:
        return self != Plausibility()

    @property
    def paths(self) -> tuple[str, ...]:
        """The contract paths the rules read (event time first)."""
        out = [EVENT] if self.declared else []
        if self.registration_not_before_event:
            out.append(REGISTRATION)
        if self.birth_before_event or self.age_at_event:
            out.append(BIRTH)
        return tuple(out)

    def violation(  # noqa: PLR0911 - one return per rule reads best
        self, event_ms: int, registration_ms: int | None, birth: date | None, delivery_ms: int
    ) -> tuple[str, str, str] | None:
        """``(reason, contract path, message)`` of the first rule the values break, or None.

        Moments are ``timestamp-millis`` numbers; local dates are Amsterdam's (``local_day``).
        """
        skew = self.max_clock_skew_minutes
        if skew is not None and event_ms > delivery_ms + skew * _MINUTE_MS:
            return (
                REASONS["max_clock_skew_minutes"],
                EVENT,
                f"event date {local_day(event_ms)[0].isoformat()} is after the delivery "
                f"(more than {skew} minutes ahead); is the year mistyped?",
            )
        floor = self.event_not_before
        if floor is not None and event_ms < day_start_ms(floor):
            return (
                REASONS["event_not_before"],
                EVENT,
                f"event date {local_day(event_ms)[0].isoformat()} is before {floor.isoformat()}, "
                "the earliest this record type accepts",
            )
        registered = registration_ms
        if (
            self.registration_not_before_event
            and registered is not None
            and registered < local_day(event_ms)[1]
        ):
            return (
                REASONS["registration_not_before_event"],
                REGISTRATION,
                f"registered before the day of the event ({local_day(event_ms)[0].isoformat()})",
            )
        if birth is None:
            return None
        day = local_day(event_ms)[0]
        if self.birth_before_event and birth > day:
            return (
                REASONS["birth_before_event"],
                BIRTH,
                f"birth date is after the event date {day.isoformat()}",
            )
        ages = self.age_at_event
        if ages is not None and not ages[0] <= age(birth, day) <= ages[1]:
            return (
                REASONS["age_at_event"],
                BIRTH,
                f"age at the event would be {age(birth, day)}; expected {ages[0]} to {ages[1]}",
            )
        return None

    def check(self, flat: dict[str, Any], delivery_time: datetime) -> tuple[str, str, str] | None:
        """The reference path's call: ``flat`` is the validated row keyed by contract path."""
        moment = flat.get(EVENT)
        if not self.declared or not isinstance(moment, datetime):
            return None
        registration = flat.get(REGISTRATION)
        birth = flat.get(BIRTH)
        return self.violation(
            millis(moment),
            millis(registration) if isinstance(registration, datetime) else None,
            birth if isinstance(birth, date) else None,
            millis(delivery_time),
        )


NO_RULES = Plausibility()
