"""Business calendars: weekly local opening hours in an IANA zone, minus holidays.

An instant is open when its local wall-clock time falls inside one of that local day's
opening intervals and the local date is not a holiday. The calendar turns this into a
table of open intervals in UTC with cumulative business seconds, so both questions the
engine asks — business seconds between two instants, and the instant N business seconds
after a start — are two binary searches. The table covers whole local years and grows
lazily (rebuilt whole, which is rare) when an instant outside it is asked about.

Instants are POSIX timestamps (seconds since the epoch, UTC, floats allowed).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from rules.errors import ConfigError

DAY = 86400
_EPOCH = dt.date(1970, 1, 1)
_SAMPLE = 6 * 3600  # zone offsets never change twice within six hours
_MAX_YEARS_AHEAD = 200

Interval = tuple[int, int]
WeeklyHours = Mapping[int, Sequence[Interval]]  # weekday (0 = Monday) -> local (start, end) seconds
HolidaySource = Callable[[range], Iterable[dt.date]]


@dataclass(frozen=True, slots=True)
class _Table:
    """Open intervals in UTC for the local years [first_year, end_year)."""

    first_year: int
    end_year: int
    covers_from: float
    covers_to: float
    starts: list[int]
    ends: list[int]
    before: list[int]  # business seconds before interval i
    through: list[int]  # business seconds up to the end of interval i


class Calendar:
    """A business calendar. Build one per configured calendar and share it: the table
    it grows is cached inside, and answers never depend on which questions came first."""

    def __init__(
        self,
        name: str,
        timezone: str,
        weekly: WeeklyHours,
        holidays: Iterable[dt.date] = (),
        holiday_source: HolidaySource | None = None,
    ) -> None:
        self.name = name
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._weekly = {day: tuple(sorted(weekly.get(day, ()))) for day in range(7)}
        for day, intervals in self._weekly.items():
            for start, end in intervals:
                if not 0 <= start < end <= DAY:
                    raise ConfigError(f"bad opening interval {start}-{end} on weekday {day}")
        if not any(self._weekly.values()):
            raise ConfigError(f"calendar {name!r} has no opening hours at all")
        self._dates = frozenset(holidays)
        self._holiday_source = holiday_source
        self._table: _Table | None = None

    @classmethod
    def always_open(cls, name: str = "24x7") -> Calendar:
        """Every second counts."""
        return cls(name, "UTC", {day: [(0, DAY)] for day in range(7)})

    def __repr__(self) -> str:
        return f"Calendar({self.name!r}, {self.timezone!r})"

    # -- the three questions -------------------------------------------------------------

    def seconds_between(self, start: float, end: float) -> float:
        """Business seconds in [start, end); negative when end comes first."""
        table = self._table
        if table is None or not (table.covers_from <= start < table.covers_to):
            table = self._covering(min(start, end), max(start, end))
        elif not (table.covers_from <= end < table.covers_to):
            table = self._covering(min(start, end), max(start, end))
        starts, ends, before = table.starts, table.ends, table.before
        i = bisect_right(starts, end) - 1
        j = bisect_right(starts, start) - 1
        at_end = before[i] + min(end, ends[i]) - starts[i] if i >= 0 else 0
        at_start = before[j] + min(start, ends[j]) - starts[j] if j >= 0 else 0
        return at_end - at_start

    def seconds_in(self, spans: Sequence[tuple[float, float]]) -> list[float]:
        """Business seconds in each of a sorted run of spans (one call for a clock's
        running spans, as many answers as :meth:`seconds_between` would give)."""
        if not spans:
            return []
        low, high = spans[0][0], spans[-1][1]
        table = self._table
        if table is None or not (table.covers_from <= low and high < table.covers_to):
            table = self._covering(low, high)
        starts, ends, before = table.starts, table.ends, table.before
        out = []
        for a, b in spans:
            i = bisect_right(starts, b) - 1
            j = bisect_right(starts, a) - 1
            at_b = before[i] + min(b, ends[i]) - starts[i] if i >= 0 else 0
            at_a = before[j] + min(a, ends[j]) - starts[j] if j >= 0 else 0
            out.append(at_b - at_a)
        return out

    def span(
        self, start: float, end: float, target: float, risk: float | None
    ) -> tuple[float, float, float | None]:
        """Three answers about one span in one look-up (a clock's hot path): the business
        seconds in [start, end), ``add(start, target)`` and ``reach(start, risk)``."""
        table = self._table
        if (
            table is not None
            and table.covers_from <= start < table.covers_to
            and table.covers_from <= end < table.covers_to
        ):
            starts, before, through = table.starts, table.before, table.through
            at = _position(table, start)
            elapsed = _position(table, end) - at
            j = bisect_right(through, at + target)
            if j < len(starts) and starts[j] < table.covers_to:
                deadline = max(start, starts[j] + max(0.0, at + target - before[j]))
                if risk is None:
                    return elapsed, deadline, None
                if risk <= 0:
                    return elapsed, deadline, start
                k = bisect_left(through, at + risk)
                if k < len(starts) and starts[k] < table.covers_to:
                    return elapsed, deadline, starts[k] + (at + risk - before[k])
        # near the edge of the table: the general answers grow it as needed
        reached = None if risk is None else self.reach(start, risk)
        return self.seconds_between(start, end), self.add(start, target), reached

    def add(self, start: float, seconds: float) -> float:
        """The latest instant by which no more than ``seconds`` business seconds have
        elapsed since ``start``: a deadline. It is always open or an opening instant, so
        adding the business seconds between a and b gives the first open instant >= b."""
        while True:
            table = self._at(start)
            target = _position(table, start) + seconds
            j = bisect_right(table.through, target)
            if j < len(table.starts) and table.starts[j] < table.covers_to:
                return max(start, table.starts[j] + max(0.0, target - table.before[j]))
            self._grow_ahead(start)

    def reach(self, start: float, seconds: float) -> float:
        """The earliest instant at which ``seconds`` business seconds have elapsed since
        ``start`` (where a clock turns at risk)."""
        if seconds <= 0:
            return start
        while True:
            table = self._at(start)
            target = _position(table, start) + seconds
            j = bisect_left(table.through, target)
            if j < len(table.starts) and table.starts[j] < table.covers_to:
                return table.starts[j] + (target - table.before[j])
            self._grow_ahead(start)

    def is_open(self, instant: float) -> bool:
        table = self._at(instant)
        i = bisect_right(table.starts, instant) - 1
        return i >= 0 and instant < table.ends[i]

    # -- the table ---------------------------------------------------------------------

    def _at(self, instant: float) -> _Table:
        table = self._table
        if table is not None and table.covers_from <= instant < table.covers_to:
            return table
        return self._covering(instant, instant)

    def _covering(self, low: float, high: float) -> _Table:
        table = self._table
        if table is not None and table.covers_from <= low and high < table.covers_to:
            return table
        first = _year_of(low) - 1
        end = _year_of(high) + 2
        if table is not None:
            first, end = min(first, table.first_year), max(end, table.end_year)
        return self._build(first, end)

    def _grow_ahead(self, start: float) -> None:
        table = self._covering(start, start)
        if table.end_year - _year_of(start) > _MAX_YEARS_AHEAD:
            raise ConfigError(
                f"calendar {self.name!r} has no opening hours within {_MAX_YEARS_AHEAD} years"
            )
        self._build(table.first_year, table.end_year + max(2, table.end_year - table.first_year))

    def _build(self, first_year: int, end_year: int) -> _Table:
        local = self._local_intervals(first_year, end_year)
        local_from = _local_seconds(dt.date(first_year, 1, 1))
        local_to = _local_seconds(dt.date(end_year, 1, 1))
        utc: list[Interval] = []
        for seg_start, seg_end, offset in _offset_segments(
            self._zone, local_from - 2 * DAY, local_to + 2 * DAY
        ):
            lo, hi = seg_start + offset, seg_end + offset  # this segment in local seconds
            i = max(0, bisect_right(local, (lo, lo)) - 1)
            while i < len(local) and local[i][0] < hi:
                a, b = max(local[i][0], lo), min(local[i][1], hi)
                if a < b:
                    utc.append((a - offset, b - offset))
                i += 1
        starts, ends, before, through = [], [], [], []
        total = 0
        for a, b in _merged(sorted(utc)):
            starts.append(a)
            ends.append(b)
            before.append(total)
            total += b - a
            through.append(total)
        table = _Table(
            first_year, end_year, local_from + DAY, local_to - DAY, starts, ends, before, through
        )
        self._table = table
        return table

    def _local_intervals(self, first_year: int, end_year: int) -> list[Interval]:
        closed = set(self._dates)
        if self._holiday_source is not None:
            closed.update(self._holiday_source(range(first_year, end_year)))
        day = dt.date(first_year, 1, 1)
        last = dt.date(end_year, 1, 1)
        out: list[Interval] = []
        while day < last:
            if day not in closed:
                base = _local_seconds(day)
                out.extend((base + s, base + e) for s, e in self._weekly[day.weekday()])
            day += dt.timedelta(days=1)
        return _merged(out)


def _position(table: _Table, instant: float) -> float:
    """Business seconds from the table's start up to ``instant``."""
    i = bisect_right(table.starts, instant) - 1
    if i < 0:
        return 0
    return table.before[i] + min(instant, table.ends[i]) - table.starts[i]


def _merged(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in intervals:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return out


def _local_seconds(day: dt.date) -> int:
    return (day - _EPOCH).days * DAY


def _year_of(instant: float) -> int:
    return (_EPOCH + dt.timedelta(seconds=instant)).year


def _offset_at(zone: ZoneInfo, instant: int) -> int:
    offset = dt.datetime.fromtimestamp(instant, zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def _offset_segments(zone: ZoneInfo, low: int, high: int) -> list[tuple[int, int, int]]:
    """(utc_start, utc_end, utc_offset) pieces of constant offset covering [low, high)."""
    segments = []
    start, offset = low, _offset_at(zone, low)
    probe = low
    while probe < high:
        nxt = min(probe + _SAMPLE, high)
        new = _offset_at(zone, nxt)
        if new != offset:
            a, b = probe, nxt  # offset(a) == offset, offset(b) == new: find the change
            while b - a > 1:
                mid = (a + b) // 2
                if _offset_at(zone, mid) == offset:
                    a = mid
                else:
                    b = mid
            segments.append((start, b, offset))
            start, offset = b, new
        probe = nxt
    segments.append((start, high, offset))
    return segments
