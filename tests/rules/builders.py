"""Concise builders for rules tests: UTC instants, ticket histories, clock lookup.

>>> h = History("2026-11-20T09:00:00").agent("2026-11-20T09:30:00").status("...", "solved")
>>> ev = rules.evaluate("zd", h.events, ruleset, utc("2026-11-20T12:00:00"))
>>> clock(ev, "first_response").state
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import rules


def utc(text: str) -> dt.datetime:
    """``utc("2026-11-20T09:00:00")`` (a trailing ``Z`` is fine) as an aware UTC datetime."""
    value = dt.datetime.fromisoformat(text.removesuffix("Z"))
    if value.tzinfo is not None:
        raise ValueError(f"give a naive UTC time, not {text!r}")
    return value.replace(tzinfo=dt.UTC)


def _value(value: Any) -> rules.events.FieldValue:
    return value if isinstance(value, str) else frozenset(value)


class History:
    """A ticket's events in the helpdesk's order: each gets id ``eNNN`` and ``seq`` = its
    position, so events at the same instant replay in the order they were added.

    By default the creator's first public message comes with the ticket (a customer's
    description, or an agent's outbound mail); ``message=False`` leaves it out."""

    def __init__(
        self, at: str, by: rules.events.Author = "customer", message: bool = True, **fields: Any
    ) -> None:
        self.events: list[rules.Event] = []
        self._add(rules.Created, at, fields={k: _value(v) for k, v in fields.items()}, by=by)
        if message:
            self._add(rules.Message, at, author=by)

    def _add(self, kind: Any, at: str, **kwargs: Any) -> History:
        n = len(self.events)
        self.events.append(kind(id=f"e{n:03d}", at=utc(at), seq=n, **kwargs))
        return self

    def customer(self, at: str, public: bool = True) -> History:
        return self._add(rules.Message, at, author="customer", public=public)

    def agent(self, at: str, public: bool = True) -> History:
        return self._add(rules.Message, at, author="agent", public=public)

    def note(self, at: str) -> History:
        """An internal note by an agent."""
        return self.agent(at, public=False)

    def system(self, at: str) -> History:
        """A public message from a trigger, automation or auto-reply."""
        return self._add(rules.Message, at, author="system")

    def set(self, at: str, field: str, new: Any) -> History:
        return self._add(rules.FieldChange, at, field=field, new=_value(new))

    def status(self, at: str, new: str) -> History:
        return self.set(at, "status", new)

    def rating(self, at: str, survey: str, score: int) -> History:
        return self._add(rules.Rating, at, survey=survey, score=score)

    def removed(self, at: str, reason: rules.events.Removal = "deleted") -> History:
        return self._add(rules.Removed, at, reason=reason)


def evaluate(
    ruleset: rules.RuleSet,
    events: History | Iterable[rules.Event],
    now: str,
    previous: Iterable[rules.Clock] = (),
    connector: str = "zd",
) -> rules.Evaluation:
    history = events.events if isinstance(events, History) else list(events)
    return rules.evaluate(connector, history, ruleset, utc(now), previous=previous)


def clocks(evaluation: rules.Evaluation, metric: str) -> list[rules.Clock]:
    return sorted((c for c in evaluation.clocks if c.metric == metric), key=lambda c: c.cycle)


def clock(evaluation: rules.Evaluation, metric: str, cycle: int = 0) -> rules.Clock:
    """The one clock of ``metric`` and ``cycle``; fails the test if there is none."""
    found = [c for c in clocks(evaluation, metric) if c.cycle == cycle]
    assert len(found) == 1, f"{len(found)} {metric} clocks of cycle {cycle}: {evaluation.clocks}"
    return found[0]
