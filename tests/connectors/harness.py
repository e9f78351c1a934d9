"""What every connector's tests need: a stand-in for the monitor that keeps what syncs
deliver, a history's shape without the source's ids, and stored instants back as times."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Sequence
from typing import Any

import rules
from connectors.base import Batch, Connector
from rules.events import Created, Event, FieldChange, Message, Rating


class Store:
    """What the monitor keeps of syncs: each batch's cursor (as JSON), the latest fields,
    every event once by id (an event sent again must be the same event)."""

    def __init__(self) -> None:
        self.cursor: dict[str, Any] | None = None
        self.fields: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Event]] = {}
        self.notes: list[str] = []
        self.delivered: list[str] = []

    def sync(self, connector: Connector, into: list[Batch] | None = None) -> list[Batch]:
        batches = into if into is not None else []
        for batch in connector.sync(self.cursor, threading.Event()):
            json.dumps(batch.cursor)  # the monitor stores it as JSON
            batches.append(batch)
            for change in batch.changes:
                self.delivered.append(change.ticket)
                self.fields[change.ticket] = dict(change.fields)
                known = self.events.setdefault(change.ticket, {})
                for event in change.events:
                    assert known.setdefault(event.id, event) == event, "an event id changed"
            self.cursor = batch.cursor
            self.notes += batch.notes
        return batches

    def history(self, ticket: int | str) -> list[Event]:
        return list(self.events[str(ticket)].values())


def shape(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """A history as the engine replays it, without the source's ids."""
    out: list[tuple[Any, ...]] = []
    for e in rules.in_order(events):
        if isinstance(e, Created):
            fields = {k: e.fields[k] for k in ("status", "priority", "queue", "channel")}
            out.append(("created", e.at, e.by, fields))
        elif isinstance(e, Message):
            out.append(("message", e.at, e.author, e.public))
        elif isinstance(e, FieldChange):
            out.append(("field", e.at, e.field, e.new))
        elif isinstance(e, Rating):
            out.append(("rating", e.at, e.survey, e.score))
        else:
            out.append(("removed", e.at, e.reason))
    return out


def at(value: float | None) -> dt.datetime | None:
    """A stored instant (POSIX seconds) as an aware datetime."""
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def stored_clocks(ticket_id: int) -> list[tuple[Any, ...]]:
    """A stored ticket's clocks as comparable rows (inside an app context)."""
    from sqlalchemy import select

    from monitor.models import ClockRow, db

    rows = db.session.scalars(
        select(ClockRow).where(ClockRow.ticket_id == ticket_id).order_by(
            ClockRow.metric, ClockRow.cycle)
    ).all()  # fmt: skip
    return [
        (r.metric, r.cycle, r.state, at(r.started_at), at(r.deadline), at(r.stopped_at),
         r.elapsed, r.target)
        for r in rows
    ]  # fmt: skip


def engine_clocks(evaluation: rules.Evaluation) -> list[tuple[Any, ...]]:
    """The engine's clocks as rows comparable with :func:`stored_clocks`."""
    return sorted(
        (c.metric, c.cycle, c.state, c.started_at, c.deadline, c.stopped_at,
         c.elapsed_seconds, c.target_seconds)
        for c in evaluation.clocks
    )  # fmt: skip


def webhook_refetch(
    app: Any, name: str, ticket: str, change: Any, post: Any, wait: float = 10.0
) -> tuple[Any, list[str]]:
    """Run the app's sync loop until its first sync is stored; then ``change()`` the ticket
    at the source and ``post(client)`` its webhook. Returns the webhook's response and the
    kinds of the events the ticket gained, which must arrive within ``wait`` seconds while
    the stored cursor stays where the sync left it."""
    import time

    from sqlalchemy import select

    from monitor.models import ConnectorState, EventRow, Ticket, db

    def stored() -> tuple[Any, list[str]]:
        with app.app_context():
            state = db.session.get(ConnectorState, name)
            found = db.session.scalars(
                select(Ticket).where(Ticket.connector == name, Ticket.source_id == ticket)
            ).one_or_none()
            kinds = [] if found is None else list(db.session.scalars(
                select(EventRow.kind).where(EventRow.ticket_id == found.id).order_by(EventRow.id)
            ))  # fmt: skip
            return (state.cursor if state else None, state.last_success if state else None), kinds

    scheduler = app.extensions["slamon"].scheduler
    scheduler.start()
    try:
        deadline = time.monotonic() + wait
        while stored()[0][1] is None:
            assert time.monotonic() < deadline, "the first sync did not finish"
            time.sleep(0.05)
        (cursor, _), before = stored()
        change()
        response = post(app.test_client())
        deadline = time.monotonic() + wait
        while len(stored()[1]) == len(before) and time.monotonic() < deadline:
            time.sleep(0.05)
        (after_cursor, _), after = stored()
        assert after_cursor == cursor, "re-reading one ticket moved the cursor"
        return response, after[len(before) :]
    finally:
        scheduler.stop(timeout=10)
