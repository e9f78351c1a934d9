"""Storing what a connector yields: a batch of changes and the cursor after it, in one
transaction, then the touched tickets re-evaluated in that same transaction. Storing the
same batch twice changes nothing (events are unique per source event id)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select

from connectors.base import Batch, TicketChange
from monitor.counters import Tally
from monitor.evaluator import refresh
from monitor.history import to_row
from monitor.models import ConnectorState, DbSession, EventRow, Ticket
from rules import RuleSet
from rules.events import Created

TEXT_FIELDS = ("status", "priority", "queue", "channel", "type", "organization", "requester")


def store_batch(
    session: DbSession, connector: str, batch: Batch, rules: RuleSet, now: dt.datetime
) -> int:
    """Store a batch and its cursor and commit; returns the number of changes stored."""
    state = session.get(ConnectorState, connector)
    assert state is not None, f"connector {connector} is not registered"
    state.cursor = batch.cursor
    if batch.newest is not None:
        state.newest_change = max(state.newest_change or 0.0, batch.newest.timestamp())
    if batch.notes:
        state.notes = list(batch.notes)
    return store_changes(session, connector, batch.changes, rules, now)


def store_changes(
    session: DbSession,
    connector: str,
    changes: Sequence[TicketChange],
    rules: RuleSet,
    now: dt.datetime,
) -> int:
    """Store changes, re-evaluate the tickets they touch and commit, leaving the cursor as
    it is (a ticket re-read on its own, after a webhook); returns the number stored."""
    tally = Tally()
    touched = _store_changes(session, connector, changes, tally)
    session.flush()
    refresh(session, touched, rules, now, tally)
    tally.add("slamon_connector_changes_total", {"connector": connector}, len(changes))
    tally.flush(session)
    session.commit()
    return len(changes)


def _store_changes(
    session: DbSession, connector: str, changes: Sequence[TicketChange], tally: Tally
) -> set[int]:
    by_source: dict[str, Ticket] = {}
    sources = sorted({change.ticket for change in changes})
    for ticket in session.scalars(
        select(Ticket).where(Ticket.connector == connector, Ticket.source_id.in_(sources))
    ):
        by_source[ticket.source_id] = ticket
    for change in changes:
        found = by_source.get(change.ticket)
        if found is None:
            ticket = Ticket(connector=connector, source_id=change.ticket, solves=0, ratings={})
            _apply_fields(ticket, change)
            session.add(ticket)
            by_source[change.ticket] = ticket
            labels = {"connector": connector, "queue": ticket.queue, "priority": ticket.priority}
            tally.add("helpdesk_tickets_created_total", {**labels, "channel": ticket.channel})
        else:
            _apply_fields(found, change)
    session.flush()
    known = {
        (ticket_id, source_id)
        for ticket_id, source_id in session.execute(
            select(EventRow.ticket_id, EventRow.source_id).where(
                EventRow.ticket_id.in_([t.id for t in by_source.values()])
            )
        )
    }
    touched = set()
    for change in changes:
        ticket = by_source[change.ticket]
        touched.add(ticket.id)
        for event in change.events:
            if (ticket.id, event.id) in known:
                continue
            known.add((ticket.id, event.id))
            kind, data = to_row(event)
            session.add(
                EventRow(
                    ticket_id=ticket.id,
                    source_id=event.id,
                    kind=kind,
                    at=event.at.timestamp(),
                    seq=event.seq,
                    data=data,
                )
            )
    return touched


def _apply_fields(ticket: Ticket, change: TicketChange) -> None:
    updated = change.updated_at or max((e.at for e in change.events), default=None)
    if updated is not None and ticket.updated_at and updated.timestamp() < ticket.updated_at:
        return  # older than what is stored (a page read again after a webhook's re-read)
    fields = change.fields
    for name in TEXT_FIELDS:
        if name in fields:
            setattr(ticket, name, str(fields[name]))
    if "tags" in fields:
        tags = fields["tags"]
        ticket.tags = sorted(tags) if isinstance(tags, frozenset) else [str(tags)]
    for name in ("subject", "url"):
        if name in fields:
            setattr(ticket, name, str(fields[name])[:1000])
    created = change.created_at or next(
        (e.at for e in change.events if isinstance(e, Created)), None
    )
    if created is not None:
        ticket.created_at = created.timestamp()
    elif ticket.created_at is None:
        ticket.created_at = min((e.at.timestamp() for e in change.events), default=0.0)
    if updated is not None:
        ticket.updated_at = max(ticket.updated_at or 0.0, updated.timestamp())
    elif ticket.updated_at is None:
        ticket.updated_at = ticket.created_at
