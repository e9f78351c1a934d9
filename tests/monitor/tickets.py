"""Small ticket histories for the service tests."""

from __future__ import annotations

import datetime as dt

from connectors.base import Batch, TicketChange
from rules.events import Created, Event, FieldChange, Message, Rating


def at(start: dt.datetime, minutes: float) -> dt.datetime:
    return start + dt.timedelta(minutes=minutes)


def ticket(
    number: str,
    created: dt.datetime,
    *events: Event,
    priority: str = "normal",
    status: str = "open",
    queue: str = "support",
    channel: str = "email",
) -> TicketChange:
    fields = {"status": "new", "priority": priority, "queue": queue, "channel": channel}
    opening: list[Event] = [
        Created(f"{number}-c", created, fields),
        Message(f"{number}-m", created, "customer", seq=1),
    ]
    return TicketChange(
        ticket=number,
        fields={**fields, "status": status, "subject": f"Ticket {number}",
                "url": f"https://help.example/tickets/{number}"},
        events=[*opening, *events],
    )  # fmt: skip


def reply(number: str, when: dt.datetime, n: int = 1) -> Message:
    return Message(f"{number}-a{n}", when, "agent")


def solve(number: str, when: dt.datetime, n: int = 1) -> FieldChange:
    return FieldChange(f"{number}-s{n}", when, "status", "solved")


def rating(number: str, when: dt.datetime, survey: str, score: int) -> Rating:
    return Rating(f"{number}-r{survey}{score}", when, survey, score)


def batch(*changes: TicketChange, cursor: int = 1) -> Batch:
    return Batch(changes=list(changes), cursor={"page": cursor}, done=True)
