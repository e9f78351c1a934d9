"""The demo's simulated world: when tickets arrive, and what became of each.

Arrivals are a Poisson process whose rate follows a weekly rhythm in Berlin time (busy in
European office hours, quiet at night and at weekends) plus short outages, when reports
pile up. Ticket ``k`` arrives after ticket ``k - 1`` by a gap drawn from its own seeded
stream, so the world is the same whoever asks, in whatever steps. Every outage's first
report arrives the instant it starts; one outage begins nine minutes before the demo goes
live, so its first, urgent report turns at_risk and then breaches in the first minutes.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right
from dataclasses import dataclass
from random import Random

from connectors.demo_helpdesk import BERLIN, DAY, HOUR, MINUTE
from connectors.demo_life import MAX_LIFE, Ticket, live

# Relative arrival rate per local hour, Monday to Sunday (scaled below to average 1).
# fmt: off
_WEEKDAY = (
    0.15, 0.15, 0.15, 0.15, 0.15, 0.15,  # 00:00-06:00
    0.15, 0.5, 1.2, 2.0, 2.0, 2.0,  # 06:00-12:00
    1.5, 1.9, 1.9, 1.9, 1.9, 1.4,  # 12:00-18:00
    0.9, 0.5, 0.5, 0.5, 0.3, 0.3,  # 18:00-24:00
)
# fmt: on
_WEEKEND = (0.1,) * 8 + (0.25,) * 2 + (0.4,) * 10 + (0.25,) * 4
_DAYS = (1.15, 1.0, 1.0, 1.0, 0.9, 1.0, 1.0)  # Mondays are busier, Fridays quieter
_RAW = [(_WEEKDAY if d < 5 else _WEEKEND)[h] * _DAYS[d] for d in range(7) for h in range(24)]
RHYTHM = tuple(w * len(_RAW) / sum(_RAW) for w in _RAW)

OPENING_LEAD = 9 * MINUTE  # the opening outage starts this long before the demo goes live
OUTAGE_SHARE = 0.3  # of days with an outage besides the opening one


@dataclass(frozen=True)
class Outage:
    start: float
    end: float


class Traffic:
    """The arrival process of one demo world."""

    def __init__(self, seed: int, per_hour: float, origin: int, live_at: int) -> None:
        self.seed = seed
        self.rate = per_hour / HOUR
        self.boost = max(per_hour, 20.0) / HOUR  # extra reports a second during an outage
        start = max(live_at - OPENING_LEAD, origin + 1)
        self.opening = Outage(start, start + 30 * MINUTE)
        self._days: dict[int, tuple[Outage, ...]] = {}

    def outages(self, day: int) -> tuple[Outage, ...]:
        """The outages that start on UTC day ``day`` (days since the epoch)."""
        found = self._days.get(day)
        if found is None:
            rng = Random(f"{self.seed}:outage:{day}")
            found = ()
            if rng.random() < OUTAGE_SHARE:
                start = day * DAY + rng.randint(7 * HOUR, 15 * HOUR)
                found = (Outage(start, start + rng.randint(20 * MINUTE, 50 * MINUTE)),)
            if self.opening.start // DAY == day:
                found += (self.opening,)
            if len(self._days) > 1000:
                self._days.clear()
            self._days[day] = found
        return found

    def outage_at(self, t: float) -> Outage | None:
        day = int(t // DAY)
        for outage in self.outages(day - 1) + self.outages(day):
            if outage.start <= t < outage.end:
                return outage
        return None

    def next_arrival(self, number: int, after: float) -> float:
        """When ticket ``number`` arrives, ticket ``number - 1`` having arrived at ``after``:
        the rate is constant within each hour and outage, so the gap is exact."""
        need = Random(f"{self.seed}:{number}:arrival").expovariate(1.0)
        t = after
        while True:
            rate, until, outage_starts = self._segment(t)
            if need <= rate * (until - t):
                return t + need / rate
            need -= rate * (until - t)
            t = until
            if outage_starts:
                return t  # the outage's first report

    def _segment(self, t: float) -> tuple[float, float, bool]:
        """The rate from ``t``, until when it holds, and whether an outage starts then."""
        local = dt.datetime.fromtimestamp(t, BERLIN)
        rate = self.rate * RHYTHM[local.weekday() * 24 + local.hour]
        until = float((math.floor(t / HOUR) + 1) * HOUR)  # local hours are UTC hours in Berlin
        day = int(t // DAY)
        near = self.outages(day - 1) + self.outages(day) + self.outages(day + 1)
        for outage in near:
            if outage.start <= t < outage.end:
                rate += self.boost
                until = min(until, outage.end)
            elif t < outage.start:
                until = min(until, outage.start)
        starts = any(t < outage.start == until for outage in near)
        return rate, until, starts


class World:
    """Every ticket of one demo world, made on demand. Lives are kept only while they may
    still change; the arrival times (a few bytes a ticket) are kept for good."""

    def __init__(self, seed: int, per_hour: float, origin: int, live_at: int) -> None:
        self.seed, self.origin, self.live_at = seed, origin, live_at
        self.traffic = Traffic(seed, per_hour, origin, live_at)
        self._position = float(origin)  # where the arrival process has got to
        self._arrivals: list[int] = []  # ticket k arrives at _arrivals[k - 1]
        self._leads: set[int] = set()
        self._ends: dict[int, int] = {}  # when tickets whose lives were dropped ended
        self._lives: dict[int, Ticket] = {}

    def touched(self, since: int, until: int) -> list[Ticket]:
        """The tickets with events in (since, until], by number."""
        self._arrive(until)
        first = bisect_right(self._arrivals, since - MAX_LIFE)
        last = bisect_right(self._arrivals, until)
        out = []
        for number in range(first + 1, last + 1):
            if self._ends.get(number, until + 1) <= since:
                continue
            ticket = self._life(number)
            if ticket.last <= since:  # done for good (until a caller goes back in time)
                self._ends[number] = ticket.last
                del self._lives[number]
            elif ticket.touched(since, until):
                out.append(ticket)
        for number in [n for n in self._lives if n <= first]:
            del self._lives[number]  # older than any life: it cannot change any more
        for number in [n for n in self._ends if n <= first]:
            del self._ends[number]
        return out

    def _arrive(self, until: int) -> None:
        while not self._arrivals or self._arrivals[-1] <= until:
            number = len(self._arrivals) + 1
            self._position = self.traffic.next_arrival(number, self._position)
            outage = self.traffic.outage_at(self._position)
            if outage is not None and outage.start == self._position:
                self._leads.add(number)
            self._arrivals.append(int(self._position) + 1)  # whole seconds, after the origin

    def _life(self, number: int) -> Ticket:
        ticket = self._lives.get(number)
        if ticket is None:
            at = self._arrivals[number - 1]
            lead = number in self._leads
            incident = lead or self.traffic.outage_at(at) is not None
            ticket = self._lives[number] = live(self.seed, number, at, incident, lead)
        return ticket
