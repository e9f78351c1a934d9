"""The built-in ``demo`` connector: a seeded simulation of a busy helpdesk.

It powers ``slamon run --demo``: no credentials, no network, and every metric, the board
and the dashboards have something to show from the first scrape. The first sync reaches
``backfill`` seconds back (default three days) and then follows the simulation in real
time; one outage is staged to begin minutes before the demo goes live, so at-risk and
breached tickets show up at once.

Options: ``seed`` (default 1), ``tickets_per_hour`` (the weekly average, default 30),
``backfill`` (seconds, default three days), ``start`` (an aware datetime, used only when
``backfill`` is not given). The world is a pure function of the seed and the two instants
the cursor keeps: ``origin`` (where the simulation begins) and ``live`` (the first sync).
The simulated team works to the demo's policies (urgent: first response in 10 minutes
around the clock, high: 1 hour, the rest: 4 office hours in Berlin) and misses now and then.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from connectors.base import (
    Batch,
    Connector,
    Cursor,
    FatalError,
    TicketChange,
    aware,
    register,
    utc_now,
)
from connectors.demo_helpdesk import DAY, URL
from connectors.demo_life import Ticket
from connectors.demo_world import World

BATCH_SIZE = 200  # ticket changes per batch (more only when many share one instant)
MAX_TICKETS_PER_HOUR = 5000.0


@register
class DemoConnector(Connector):
    """Simulated tickets; see the module's docstring."""

    type = "demo"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        super().__init__(name, options)
        self.seed = int(_number(options, "seed", 1, whole=True))
        self.tickets_per_hour = _number(options, "tickets_per_hour", 30.0)
        if not 0 < self.tickets_per_hour <= MAX_TICKETS_PER_HOUR:
            raise FatalError(f"demo: tickets_per_hour must be in (0, {MAX_TICKETS_PER_HOUR:g}]")
        self.backfill: int | None = None
        self.start: dt.datetime | None = None
        if options.get("backfill") is not None:
            self.backfill = int(_number(options, "backfill", 0, whole=True))
            if self.backfill < 0:
                raise FatalError("demo: backfill must not be negative")
        elif options.get("start") is not None:
            self.start = aware(options["start"], "demo: start")
        else:
            self.backfill = 3 * DAY
        self._clock = clock
        self._world: World | None = None

    def ticket_url(self, ticket: str) -> str:
        return URL.format(ticket)

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        now = int(aware(self._clock(), "demo: clock").timestamp())
        origin, live_at, since = self._position(cursor, now)
        world = self._world_of(origin, live_at)

        def cursor_at(t: int) -> Cursor:
            return {"origin": _iso(origin), "live": _iso(live_at), "until": _iso(t)}

        if now <= since:  # nothing can have happened (or the clock went back)
            yield Batch((), cursor_at(since), newest=_instant(since), done=True)
            return
        for until, tickets, done in _batches(world.touched(since, now), since, now):
            if stop.is_set():
                return
            changes = [_change(ticket, since, until) for ticket in tickets]
            yield Batch(changes, cursor_at(until), newest=_instant(until), done=done)
            since = until

    def _position(self, cursor: Cursor | None, now: int) -> tuple[int, int, int]:
        """The simulation's origin, when it went live, and the end of what was delivered."""
        if cursor is None:
            if self.backfill is not None:
                origin = now - self.backfill
            else:
                assert self.start is not None
                origin = min(now, int(self.start.timestamp()))
            return origin, now, origin
        try:
            origin, live_at, until = (_seconds(cursor[key]) for key in ("origin", "live", "until"))
        except (KeyError, TypeError, ValueError):
            raise FatalError(f"demo: not a cursor of this connector: {cursor!r}") from None
        return origin, live_at, until

    def _world_of(self, origin: int, live_at: int) -> World:
        world = self._world
        if world is None or (world.origin, world.live_at) != (origin, live_at):
            world = self._world = World(self.seed, self.tickets_per_hour, origin, live_at)
        return world


def _batches(
    tickets: Sequence[Ticket], since: int, until: int
) -> Iterator[tuple[int, list[Ticket], bool]]:
    """Cut (since, until] between instants into spans touching at most BATCH_SIZE tickets
    each (more only if that many change at one instant): (end of span, its tickets, last?)."""
    touched_at: dict[int, list[int]] = {}
    for i, ticket in enumerate(tickets):
        for t in set(ticket.times_in(since, until)):
            touched_at.setdefault(t, []).append(i)
    batch: dict[int, None] = {}  # the span's tickets, in the order they were first touched
    last = since
    for t in sorted(touched_at):
        new = [i for i in touched_at[t] if i not in batch]
        if batch and len(batch) + len(new) > BATCH_SIZE:
            yield last, [tickets[i] for i in batch], False
            batch = {}
        batch.update(dict.fromkeys(touched_at[t]))
        last = t
    yield until, [tickets[i] for i in batch], True


def _change(ticket: Ticket, since: int, until: int) -> TicketChange:
    events = ticket.between(since, until)
    fields = ticket.fields_at(until)
    return TicketChange(
        ticket=ticket.id,
        fields=fields,
        events=events,
        created_at=_instant(ticket.created_at),
        updated_at=events[-1].at if events else None,
    )


def _number(options: Mapping[str, Any], key: str, default: float, whole: bool = False) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        kind = "a whole number" if whole else "a number"
        raise FatalError(f"demo: {key} must be {kind}, not {value!r}")
    return float(value)


def _seconds(value: Any) -> int:
    return int(aware(value, "demo: cursor time").timestamp())


def _instant(t: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def _iso(t: int) -> str:
    return _instant(t).isoformat().replace("+00:00", "Z")
