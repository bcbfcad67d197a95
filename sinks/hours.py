"""Period and local date of a whole column of event times, in a few numpy operations per batch.

``ketenstroom.calendar.HourCalendar`` converts one UTC hour at a time (Amsterdam is a whole number of
hours from UTC, so period and date are the same for a whole UTC hour). A consume batch of a
re-processing run spans thousands of distinct hours, and one Python call per hour per batch cost as
much as decoding the batch column-wise. ``HourTable`` keeps what the calendar said in arrays indexed by
hour, over the span of hours seen so far: a batch then costs one gather, and the calendar is asked only
about hours never seen before.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from ketenstroom.calendar import HourCalendar

_EPOCH = date(1970, 1, 1)
MAX_SPAN_HOURS = 24 * 366 * 30  # 30 years of hours (~2 MiB of arrays); a wider span is looked up per hour


class HourTable:
    """Hour -> (period index, local day number), filled from a ``HourCalendar`` on demand."""

    def __init__(self, calendar: HourCalendar) -> None:
        self.calendar = calendar
        self.periods: list[str] = []  # period index -> period code
        self._index: dict[str, int] = {}
        self._first = 0  # hour of element 0
        self._period = np.empty(0, np.int32)  # -1: not looked up yet
        self._day = np.empty(0, np.int32)

    def lookup(self, epoch_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Period index and local date (days since 1970-01-01) of each instant (ms since the epoch)."""
        hours = epoch_ms // 3_600_000
        if not len(hours):
            return np.empty(0, np.int32), np.empty(0, np.int32)
        low, high = int(hours.min()), int(hours.max())
        if high - low >= MAX_SPAN_HOURS:  # (noise far in the past or future) one lookup per distinct hour
            distinct, at = np.unique(hours, return_inverse=True)
            found = [self._convert(int(h)) for h in distinct.tolist()]
            return (
                np.array([p for p, _d in found], np.int32)[at],
                np.array([d for _p, d in found], np.int32)[at],
            )
        self._cover(low, high)
        rel = hours - self._first
        period = self._period[rel]
        missing = period < 0
        if missing.any():
            for h in np.unique(rel[missing]).tolist():
                self._period[h], self._day[h] = self._convert(h + self._first)
            period = self._period[rel]
        return period, self._day[rel]

    def _convert(self, hour: int) -> tuple[int, int]:
        period, day = self.calendar(hour * 3_600_000)
        index = self._index.get(period)
        if index is None:
            index = self._index[period] = len(self.periods)
            self.periods.append(period)
        return index, (day - _EPOCH).days

    def _cover(self, low: int, high: int) -> None:
        """Grow the arrays to cover hours ``low..high`` (kept within ``MAX_SPAN_HOURS``: restart the span
        when it would grow beyond)."""
        size = len(self._period)
        first, last = min(low, self._first), max(high, self._first + size - 1)
        if size and low >= self._first and high < self._first + size:
            return
        if not size or last - first >= MAX_SPAN_HOURS:
            first, last = low, high
            size = 0
        period = np.full(last - first + 1, -1, np.int32)
        day = np.zeros(last - first + 1, np.int32)
        if size:
            shift = self._first - first
            period[shift : shift + size], day[shift : shift + size] = self._period, self._day
        self._first, self._period, self._day = first, period, day
