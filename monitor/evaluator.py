"""Keeps stored clocks current: re-evaluates tickets after their history changed, and
counts what happened (breaches, completions, solves, survey answers) exactly once."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select

from monitor.counters import BUSINESS_BUCKETS, Tally
from monitor.history import from_row
from monitor.models import ClockRow, DbSession, EventRow, Ticket
from rules import Clock, Completion, RuleSet, evaluate
from rules.events import DONE, Event, FieldChange, in_order

UTC = dt.UTC
RUNNING = ("on_track", "at_risk", "breached")
RESPONSES = ("first_response", "next_response")


def ticket_labels(ticket: Ticket) -> dict[str, str]:
    return {"connector": ticket.connector, "queue": ticket.queue, "priority": ticket.priority}


def refresh(
    session: DbSession, ticket_ids: Iterable[int], rules: RuleSet, now: dt.datetime, tally: Tally
) -> int:
    """Re-evaluate these tickets as of ``now``; returns how many were evaluated."""
    ids = sorted(set(ticket_ids))
    if not ids:
        return 0
    tickets = session.scalars(select(Ticket).where(Ticket.id.in_(ids))).all()
    events: dict[int, list[Event]] = defaultdict(list)
    for row in session.scalars(select(EventRow).where(EventRow.ticket_id.in_(ids))):
        events[row.ticket_id].append(from_row(row.source_id, row.kind, row.at, row.seq, row.data))
    stored: dict[int, dict[tuple[str, int], ClockRow]] = defaultdict(dict)
    for row in session.scalars(select(ClockRow).where(ClockRow.ticket_id.in_(ids))):
        stored[row.ticket_id][(row.metric, row.cycle)] = row
    for ticket in tickets:
        _refresh_one(session, ticket, events[ticket.id], stored[ticket.id], rules, now, tally)
    return len(tickets)


def _refresh_one(
    session: DbSession,
    ticket: Ticket,
    history: Sequence[Event],
    rows: dict[tuple[str, int], ClockRow],
    rules: RuleSet,
    now: dt.datetime,
    tally: Tally,
) -> None:
    previous = [to_clock(row) for row in rows.values()]
    # A helpdesk whose clock runs ahead must not have its newest events ignored until the
    # ticket changes again: evaluate as of the newest event when it lies in our future.
    now = max([now, *(event.at for event in history)])
    result = evaluate(ticket.connector, history, rules, now, previous=previous)
    labels = ticket_labels(ticket)
    ticket.policy = result.policy
    ticket.removed = result.removed
    solves = count_solves(history, now)
    if solves > ticket.solves:
        tally.add("helpdesk_tickets_solved_total", labels, solves - ticket.solves)
        ticket.solves = solves
    answers = dict(ticket.ratings or {})
    for survey, score in result.ratings.items():
        if answers.get(survey) != score:  # a new answer, or a changed one: the latest counts
            tally.add(
                "helpdesk_satisfaction_responses_total",
                {**labels, "survey": survey, "score": str(score)},
            )
            answers[survey] = score
    ticket.ratings = answers
    at = now.timestamp()
    seen = set()
    for clock in result.clocks:
        key = (clock.metric, clock.cycle)
        seen.add(key)
        row = rows.get(key)
        if row is None:
            row = ClockRow(ticket_id=ticket.id, metric=clock.metric, cycle=clock.cycle)
            row.breach_counted = False
            row.completions = []
            session.add(row)
        _count(row, clock, labels, tally)
        _store(row, clock, ticket, at)
    for key, row in rows.items():
        if key not in seen:  # a late event reshaped the history: this clock is gone
            session.delete(row)


def _count(row: ClockRow, clock: Clock, labels: dict[str, str], tally: Tally) -> None:
    if clock.breached_at is not None and not row.breach_counted:
        tally.add(
            "helpdesk_sla_breaches_total",
            {**labels, "policy": clock.policy, "metric": clock.metric},
        )
        row.breach_counted = True
    counted = {c["at"] for c in row.completions or []}
    for done in clock.completions:
        if done.at.timestamp() in counted:
            continue
        series = {**labels, "policy": done.policy, "metric": clock.metric}
        result = "achieved" if done.achieved else "missed"
        tally.add("helpdesk_sla_completed_total", {**series, "result": result})
        if clock.metric in RESPONSES:
            tally.observe(
                "helpdesk_response_seconds", series, done.elapsed_seconds, BUSINESS_BUCKETS
            )
        elif clock.metric == "resolution":
            tally.observe(
                "helpdesk_resolution_seconds",
                {**labels, "policy": done.policy},
                done.elapsed_seconds,
                BUSINESS_BUCKETS,
            )


def _store(row: ClockRow, clock: Clock, ticket: Ticket, at: float) -> None:
    row.connector, row.queue, row.priority = ticket.connector, ticket.queue, ticket.priority
    row.policy = clock.policy
    row.state = clock.state
    row.started_at = clock.started_at.timestamp()
    row.deadline = _ts(clock.deadline)
    row.at_risk_at = _ts(clock.at_risk_at)
    row.stopped_at = _ts(clock.stopped_at)
    row.elapsed = clock.elapsed_seconds
    row.target = clock.target_seconds
    row.evaluated_at = at
    if clock.breached_at is not None and row.breached_at is None:
        row.breached_at = clock.breached_at.timestamp()
    row.completions = [_completion(c) for c in clock.completions]


def count_due_breaches(session: DbSession, now: dt.datetime, tally: Tally) -> int:
    """Count the breaches of running clocks whose deadline passed since their last
    evaluation: a breach counts at its deadline, whether or not an event came since."""
    at = now.timestamp()
    due = session.scalars(
        select(ClockRow).where(
            ClockRow.state.in_(RUNNING),
            ClockRow.breach_counted.is_(False),
            ClockRow.deadline < at,
        )
    ).all()
    for row in due:
        labels = {"connector": row.connector, "queue": row.queue, "priority": row.priority}
        tally.add(
            "helpdesk_sla_breaches_total", {**labels, "policy": row.policy, "metric": row.metric}
        )
        row.breach_counted = True
        row.breached_at = row.deadline
    return len(due)


def count_solves(history: Sequence[Event], now: dt.datetime) -> int:
    solves, done = 0, False
    for event in in_order(history, until=now):
        if isinstance(event, FieldChange) and event.field == "status":
            now_done = str(event.new) in DONE
            solves += now_done and not done
            done = now_done
    return solves


def to_clock(row: ClockRow) -> Clock:
    return Clock(
        row.metric,
        row.cycle,
        row.policy,
        row.state,  # type: ignore[arg-type]
        _dt(row.started_at),
        _maybe_dt(row.deadline),
        _maybe_dt(row.stopped_at),
        row.elapsed,
        row.target,
        _maybe_dt(row.at_risk_at),
        _maybe_dt(row.breached_at),
        tuple(
            Completion(_dt(c["at"]), c["policy"], c["elapsed"], c["target"], c["achieved"])
            for c in row.completions or []
        ),
    )


def _completion(done: Completion) -> dict[str, Any]:
    return {
        "at": done.at.timestamp(),
        "policy": done.policy,
        "elapsed": done.elapsed_seconds,
        "target": done.target_seconds,
        "achieved": done.achieved,
    }


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, UTC)


def _maybe_dt(value: float | None) -> dt.datetime | None:
    return None if value is None else _dt(value)


def reevaluate_all(app: Any, chunk: int = 500) -> int:
    """Re-evaluate every ticket that is not gone (on start: the policies may have changed,
    SLA-SEMANTICS.md #24)."""
    from monitor.models import db

    done = 0
    with app.app_context():
        rules = app.extensions["slamon"].rules
        ids = list(db.session.scalars(select(Ticket.id).where(Ticket.removed.is_(False))))
        for start in range(0, len(ids), chunk):
            tally = Tally()
            done += refresh(
                db.session, ids[start : start + chunk], rules, dt.datetime.now(UTC), tally
            )
            tally.flush(db.session)
            db.session.commit()
    return done
