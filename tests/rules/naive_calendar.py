"""A deliberately naive business calendar, the reference the property tests hold
rules.calendar.Calendar against.

It shares no code with the engine. Whether an instant is open is decided directly from its
local wall-clock time (``datetime.fromtimestamp(t, zone)``); business time is summed by
walking one minute at a time. That is only right because every opening interval, UTC offset,
DST switch and local midnight of the zones and years used in the tests falls on a whole
minute, so openness is constant over each UTC minute ``[60k, 60k + 60)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterator, Mapping, Sequence
from zoneinfo import ZoneInfo

MINUTE = 60
MAX_MINUTES = 120 * 24 * 60  # the tests never ask about more than ~4 months


class NaiveCalendar:
    def __init__(
        self,
        timezone: str,
        weekly: Mapping[int, Sequence[tuple[int, int]]],
        holidays: Container[dt.date] = frozenset(),
    ) -> None:
        self.zone = ZoneInfo(timezone)
        self.weekly = {day: list(weekly.get(day, ())) for day in range(7)}
        self.holidays = holidays
        self._minutes: dict[int, bool] = {}

    def is_open(self, instant: float) -> bool:
        local = dt.datetime.fromtimestamp(instant, self.zone)
        if local.date() in self.holidays:
            return False
        wall = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return any(start <= wall < end for start, end in self.weekly[local.weekday()])

    def _minute_open(self, minute: int) -> bool:
        """Whether the UTC minute starting at ``minute * 60`` is open (cached)."""
        known = self._minutes.get(minute)
        if known is None:
            known = self._minutes[minute] = self.is_open(minute * MINUTE)
        return known

    def _cells(self, start: float) -> Iterator[tuple[float, float, bool]]:
        """Successive (cell_start, cell_end, open) of the UTC minutes from ``start``'s on;
        the first one cut to begin at ``start``."""
        first = int(start // MINUTE)
        for minute in range(first, first + MAX_MINUTES):
            lo = start if minute == first else minute * MINUTE
            yield lo, (minute + 1) * MINUTE, self._minute_open(minute)
        raise AssertionError("the naive calendar walked too far")

    def seconds_between(self, start: float, end: float) -> float:
        if end < start:
            return -self.seconds_between(end, start)
        total = 0.0
        for lo, hi, is_open in self._cells(start):
            if lo >= end:
                return total
            if is_open:
                total += min(hi, end) - lo

    def add(self, start: float, seconds: float) -> float:
        """The latest instant by which at most ``seconds`` business seconds have elapsed."""
        remaining = seconds
        for lo, hi, is_open in self._cells(start):
            if is_open:
                if remaining < hi - lo:
                    return lo + remaining
                remaining -= hi - lo

    def reach(self, start: float, seconds: float) -> float:
        """The earliest instant at which ``seconds`` business seconds have elapsed."""
        if seconds <= 0:
            return start
        remaining = seconds
        for lo, hi, is_open in self._cells(start):
            if is_open:
                if remaining <= hi - lo:
                    return lo + remaining
                remaining -= hi - lo

    def first_open_at_or_after(self, instant: float) -> float:
        for lo, _, is_open in self._cells(instant):
            if is_open:
                return lo
