"""What the API and the board show, read from storage as of an instant."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from monitor.history import describe
from monitor.models import ClockRow, DbSession, EventRow, Ticket
from rules import Policy, RuleSet
from rules.clocks import state_at

RUNNING = ("on_track", "at_risk", "breached", "paused")
SHOWN = (*RUNNING, "achieved", "missed")


def live_state(row: ClockRow, now: float) -> str:
    """A stored clock's state at ``now`` (no event since its evaluation)."""
    return state_at(row.state, row.deadline, row.at_risk_at, now)  # type: ignore[arg-type]


def iso(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(round(value), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_json(
    row: ClockRow, now: float, connector: str, ticket: str, rules: RuleSet | None = None
) -> dict[str, Any]:
    state = live_state(row, now)
    elapsed = row.elapsed
    policy = _policy(rules, row.policy)
    if row.at_risk_at is not None and state in ("on_track", "at_risk", "breached") and policy:
        elapsed += policy.calendar.seconds_between(row.evaluated_at, now)  # running since
    return {
        "connector": connector,
        "ticket": ticket,
        "policy": row.policy,
        "metric": row.metric,
        "cycle": row.cycle,
        "state": state,
        "started_at": iso(row.started_at),
        "deadline": iso(row.deadline),
        "at_risk_at": iso(row.at_risk_at),
        "stopped_at": iso(row.stopped_at),
        "elapsed_seconds": round(elapsed),
        "target_seconds": row.target,
    }


def _policy(rules: RuleSet | None, name: str) -> Policy | None:
    if rules is None:
        return None
    return next((p for p in rules.policies if p.name == name), None)


def ticket_json(ticket: Ticket) -> dict[str, Any]:
    return {
        "connector": ticket.connector,
        "id": ticket.source_id,
        "url": ticket.url if ticket.url.startswith(("https://", "http://")) else None,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "queue": ticket.queue,
        "channel": ticket.channel,
        "type": ticket.type,
        "tags": list(ticket.tags or []),
        "organization": ticket.organization,
        "requester": ticket.requester,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "policy": ticket.policy,
    }


def running_tickets(
    session: DbSession,
    now: float,
    states: tuple[str, ...] = RUNNING,
    metric: str | None = None,
    connector: str | None = None,
    policy: str | None = None,
    limit: int = 100,
    rules: RuleSet | None = None,
) -> list[dict[str, Any]]:
    """Tickets with a running clock in one of ``states``, nearest deadline first."""
    query = (
        select(ClockRow, Ticket)
        .join(Ticket, Ticket.id == ClockRow.ticket_id)
        .where(ClockRow.state.in_(RUNNING), Ticket.removed.is_(False))
    )
    if metric:
        query = query.where(ClockRow.metric == metric)
    if connector:
        query = query.where(ClockRow.connector == connector)
    if policy:
        query = query.where(ClockRow.policy == policy)
    matching: dict[int, tuple[Ticket, list[ClockRow], float]] = {}
    for row, ticket in session.execute(query):
        if live_state(row, now) not in states:
            continue
        nearest = row.deadline if row.deadline is not None else float("inf")
        if ticket.id in matching:
            _, rows, best = matching[ticket.id]
            rows.append(row)
            matching[ticket.id] = (ticket, rows, min(best, nearest))
        else:
            matching[ticket.id] = (ticket, [row], nearest)
    ordered = sorted(matching.values(), key=lambda item: (item[2], item[0].id))[:limit]
    out = []
    for ticket, rows, _ in ordered:
        item = ticket_json(ticket)
        item["clocks"] = [
            clock_json(r, now, ticket.connector, ticket.source_id, rules)
            for r in sorted(rows, key=lambda r: r.deadline or float("inf"))
        ]
        out.append(item)
    return out


def ticket_detail(
    session: DbSession, connector: str, source_id: str, now: float, rules: RuleSet | None = None
) -> dict[str, Any] | None:
    ticket = session.scalars(
        select(Ticket).where(Ticket.connector == connector, Ticket.source_id == source_id)
    ).first()
    if ticket is None:
        return None
    item = ticket_json(ticket)
    item["removed"] = ticket.removed
    events = session.scalars(
        select(EventRow).where(EventRow.ticket_id == ticket.id).order_by(EventRow.at, EventRow.seq)
    )
    item["timeline"] = [
        {
            "at": iso(e.at),
            "kind": e.kind,
            "id": e.source_id,
            "what": describe(e.kind, e.data),
            **e.data,
        }
        for e in events
    ]
    clocks = session.scalars(select(ClockRow).where(ClockRow.ticket_id == ticket.id))
    item["clocks"] = [
        clock_json(row, now, connector, source_id, rules)
        for row in sorted(clocks, key=lambda r: (r.metric, r.cycle))
        if row.state in SHOWN
    ]
    return item


def clocks_by_ticket(session: DbSession) -> dict[int, list[ClockRow]]:
    out: dict[int, list[ClockRow]] = defaultdict(list)
    for row in session.scalars(select(ClockRow)):
        out[row.ticket_id].append(row)
    return out
