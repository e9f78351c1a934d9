"""A ticket's history as the engine reads it (SLA-SEMANTICS.md, "The input").

Every event carries the helpdesk's own time ``at`` (aware datetime), its position among
events at the same instant ``seq`` (the helpdesk's order), and the source's event ``id``
(replays and duplicates are recognised by it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Author = Literal["customer", "agent", "system"]
Removal = Literal["deleted", "merged", "spam"]
FieldValue = str | frozenset[str]

STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("email", "web", "chat", "phone", "api", "social", "other")
DONE = frozenset({"solved", "closed"})


@dataclass(frozen=True, slots=True)
class _Stamped:
    """What every event carries besides its own fields: ``at`` as a POSIX timestamp,
    computed once (histories are replayed many times)."""

    ts: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", self.at.timestamp())  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Created(_Stamped):
    """The ticket came to be, with its fields at creation."""

    id: str
    at: dt.datetime
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    by: Author = "customer"
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Message(_Stamped):
    id: str
    at: dt.datetime
    author: Author
    public: bool = True
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FieldChange(_Stamped):
    """A change of ``status``, ``priority``, ``queue``, ``tags``, ``type``, ... ."""

    id: str
    at: dt.datetime
    field: str
    new: FieldValue
    old: FieldValue | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Rating(_Stamped):
    """A satisfaction answer: ``survey`` is csat (1-5), nps (0-10) or ces (1-5)."""

    id: str
    at: dt.datetime
    survey: str
    score: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Removed(_Stamped):
    """Deleted, merged into another ticket, or marked as spam."""

    id: str
    at: dt.datetime
    reason: Removal = "deleted"
    seq: int = 0


Event = Created | Message | FieldChange | Rating | Removed


def in_order(events: Iterable[Event], until: dt.datetime | None = None) -> list[Event]:
    """The history as a replay reads it: once per id, by time then helpdesk order, and
    nothing after ``until``."""
    return [event for _, _, _, event in timed(events, until)]


def timed(
    events: Iterable[Event], until: dt.datetime | None = None
) -> list[tuple[float, int, str, Event]]:
    """:func:`in_order` as (POSIX timestamp, seq, id, event)."""
    limit = until.timestamp() if until is not None else float("inf")
    seen: dict[str, tuple[float, int, str, Event]] = {}
    for event in events:
        if event.id not in seen:
            t = event.ts
            if t <= limit:
                seen[event.id] = (t, event.seq, event.id, event)
    # ids are unique, so the sort never compares two events themselves
    return sorted(seen.values())
