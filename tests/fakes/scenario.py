"""One support story, told by every fake helpdesk.

Each fake turns these tickets into its own API's objects (Zendesk tickets and audits,
Freshdesk tickets and conversations, ...); its connector must turn them back into the same
normalized history. ``expected_events`` is that history written directly, so the clocks
slamon computes from any source can be compared with the engine's answer for the story.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from rules.events import Created, Event, FieldChange, Message, Rating

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)  # a Monday, 10:00 in Berlin

Who = Literal["customer", "agent", "system"]


def minutes(m: float) -> dt.datetime:
    """The instant ``m`` minutes after T0."""
    return T0 + dt.timedelta(minutes=m)


@dataclass(frozen=True)
class Step:
    """One thing that happened to a ticket: a message (``who``/``public``), a status or
    priority change, or a satisfaction answer."""

    when: dt.datetime
    kind: Literal["message", "status", "priority", "rating"]
    who: Who = "customer"
    public: bool = True
    value: str = ""
    score: int = 0


@dataclass(frozen=True)
class Story:
    key: str
    subject: str
    created: dt.datetime
    priority: str = "normal"  # normalized
    channel: str = "email"
    queue: str = "Support"
    by: Who = "customer"
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def status_at_end(self) -> str:
        status = "new"
        for step in self.steps:
            if step.kind == "status":
                status = step.value
        return status

    def priority_at_end(self) -> str:
        priority = self.priority
        for step in self.steps:
            if step.kind == "priority":
                priority = step.value
        return priority


def _m(m: float, who: Who = "customer", public: bool = True) -> Step:
    return Step(minutes(m), "message", who, public)


def _s(m: float, status: str) -> Step:
    return Step(minutes(m), "status", value=status)


STORIES: tuple[Story, ...] = (
    # answered in time, pending, reopened by the customer, solved, rated good
    Story(
        "printer",
        "Printer on fire",
        minutes(0),
        "high",
        steps=(
            _m(0),
            _m(20, "agent", public=False),
            _m(35, "agent"),
            _s(35, "pending"),
            _m(120),
            _s(120, "open"),
            _m(180, "agent"),
            _s(181, "solved"),
            Step(minutes(240), "rating", value="csat", score=5),
        ),
    ),
    # an auto-reply, then nobody answers: first response breaches
    Story(
        "refund",
        "Refund for order 1234",
        minutes(10),
        "urgent",
        steps=(
            _m(10),
            _m(11, "system"),
        ),
    ),
    # several customer messages before the answer; next response keeps the oldest start
    Story(
        "login",
        "Cannot log in",
        minutes(30),
        "normal",
        channel="web",
        steps=(
            _m(30),
            _m(60, "agent"),
            _s(60, "pending"),
            _m(90),
            _s(90, "open"),
            _m(95),
            _m(100),
            _m(400, "agent"),
        ),
    ),
    # priority raised later; solved without a public reply; rated bad
    Story(
        "invoice",
        "Invoice address wrong",
        minutes(45),
        "low",
        queue="Billing",
        steps=(
            _m(45),
            Step(minutes(100), "priority", value="urgent"),
            _s(200, "solved"),
            Step(minutes(260), "rating", value="csat", score=1),
        ),
    ),
    # an outbound ticket: the agent writes first, then the customer answers
    Story(
        "renewal",
        "Your renewal",
        minutes(50),
        "normal",
        by="agent",
        steps=(
            _m(50, "agent"),
            _m(300),
            _s(301, "open"),
        ),
    ),
)


def expected_events(story: Story) -> list[Event]:
    """The normalized history a connector must deliver for a story (ids are the
    scenario's own; a connector's ids differ, which does not change any clock)."""
    fields = {"status": "new", "priority": story.priority, "queue": story.queue,
              "channel": story.channel}  # fmt: skip
    events: list[Event] = [Created(f"{story.key}-created", story.created, fields, by=story.by)]
    for n, step in enumerate(story.steps, start=1):
        eid = f"{story.key}-{n}"
        if step.kind == "message":
            events.append(Message(eid, step.when, step.who, public=step.public, seq=n))
        elif step.kind == "status":
            events.append(FieldChange(eid, step.when, "status", step.value, seq=n))
        elif step.kind == "priority":
            events.append(FieldChange(eid, step.when, "priority", step.value, seq=n))
        else:
            events.append(Rating(eid, step.when, step.value, step.score, seq=n))
    return events


# Policies the story is judged by (the connectors' tests load them with rules.load_rules).
RULES = {
    "calendars": [
        {"name": "office", "timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"},
         "holidays": {"country": "DE"}},
    ],
    "policies": [
        {"name": "urgent", "match": {"priority": ["urgent"]},
         "targets": {"first_response": "30m", "next_response": "1h", "resolution": "4h"}},
        {"name": "standard", "calendar": "office",
         "targets": {"first_response": "1h", "next_response": "2h", "periodic_update": "4h",
                     "resolution": "1d"}},
    ],
}  # fmt: skip
