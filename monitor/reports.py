"""Reports over the stored history: clocks as of an instant, and policy backtests."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from flask import Flask
from sqlalchemy import select

from monitor.history import from_row
from monitor.models import EventRow, Ticket, db
from rules import Clock, Evaluation, RuleSet, evaluate
from rules.events import Event

SHOWN = ("on_track", "at_risk", "breached", "paused", "achieved", "missed")


def rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def clock_row(connector: str, ticket: str, clock: Clock) -> dict[str, Any]:
    """One clock as ``slamon clocks --json`` prints it (CONTRACT.md)."""
    return {
        "connector": connector,
        "ticket": ticket,
        "policy": clock.policy,
        "metric": clock.metric,
        "state": clock.state,
        "started_at": rfc3339(clock.started_at),
        "deadline": rfc3339(clock.deadline),
        "stopped_at": rfc3339(clock.stopped_at),
        "elapsed_seconds": _number(clock.elapsed_seconds),
        "target_seconds": clock.target_seconds,
    }


def histories(app: Flask, since: dt.datetime | None = None) -> Iterator[tuple[Ticket, list[Event]]]:
    """Every stored ticket with its events, a chunk of tickets at a time."""
    with app.app_context():
        query = select(Ticket.id).order_by(Ticket.id)
        if since is not None:
            query = query.where(Ticket.created_at >= since.timestamp())
        ids = list(db.session.scalars(query))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            tickets = {
                t.id: t for t in db.session.scalars(select(Ticket).where(Ticket.id.in_(chunk)))
            }
            events: dict[int, list[Event]] = defaultdict(list)
            for row in db.session.scalars(select(EventRow).where(EventRow.ticket_id.in_(chunk))):
                events[row.ticket_id].append(
                    from_row(row.source_id, row.kind, row.at, row.seq, row.data)
                )
            for ticket_id in chunk:
                yield tickets[ticket_id], events[ticket_id]


def clocks_at(app: Flask, when: dt.datetime) -> list[dict[str, Any]]:
    rules: RuleSet = app.extensions["slamon"].rules
    out: list[dict[str, Any]] = []
    for ticket, events in histories(app):
        result = evaluate(ticket.connector, events, rules, when)
        out.extend(
            clock_row(ticket.connector, ticket.source_id, c)
            for c in result.clocks
            if c.state in SHOWN
        )
    return out


def format_clock_rows(rows: list[dict[str, Any]]) -> str:
    head = (
        "connector",
        "ticket",
        "policy",
        "metric",
        "state",
        "deadline",
        "elapsed_seconds",
        "target_seconds",
    )
    table = [head] + [tuple(str(r[k] if r[k] is not None else "-") for k in head) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def _compliance(results: list[Evaluation]) -> dict[tuple[str, str], tuple[int, int]]:
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for clock in result.clocks:
            for done in clock.completions:
                tally[(done.policy, clock.metric)][0 if done.achieved else 1] += 1
    return {k: (v[0], v[1]) for k, v in tally.items()}


def backtest(app: Flask, current: RuleSet, other: RuleSet, since: dt.datetime | None) -> str:
    """Compliance (achieved / (achieved + missed)) per policy and metric, current rules
    beside the proposed ones, over the same stored history."""
    now = dt.datetime.now(dt.UTC)
    ours, theirs = [], []
    for ticket, events in histories(app, since):
        ours.append(evaluate(ticket.connector, events, current, now))
        theirs.append(evaluate(ticket.connector, events, other, now))
    head = ("rules", "policy", "metric", "achieved", "missed", "compliance")
    lines = ["{:<10} {:<20} {:<16} {:>9} {:>7} {:>10}".format(*head)]
    for label, results in (("current", ours), ("proposed", theirs)):
        for (policy, metric), (achieved, missed) in sorted(_compliance(results).items()):
            share = achieved / (achieved + missed) if achieved + missed else 0.0
            lines.append(
                f"{label:<10} {policy:<20} {metric:<16} {achieved:>9} {missed:>7} {share:>10.1%}"
            )
    lines.append(f"{len(ours)} tickets")
    return "\n".join(lines)
