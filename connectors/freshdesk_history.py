"""Freshdesk's tickets, conversations and satisfaction ratings as slamon's normalized
history (HELPDESK-APIS.md, "Freshdesk API v2").

Freshdesk API v2 keeps no per-ticket field history (no audits, no activities endpoint in
the facts we follow), so field changes are derived from what a ticket says about itself:

- status: the current status holds since ``stats.status_updated_at``; ``stats`` also
  keeps the latest time the ticket went pending (``pending_since``), was resolved
  (``resolved_at``), closed (``closed_at``) and reopened (``reopened_at``). Each is a fact
  about the past, so each becomes a status change at that instant. A sync that sees a
  ticket after every change (slamon polls every minute and on webhooks) therefore records
  every transition; transitions that come and go between two looks are lost, except the
  ones ``stats`` still remembers.
- priority, group, type, tags: only their current value is known. Each look at a changed
  ticket records "the value as of ``updated_at``"; re-stating an unchanged value changes
  no clock (the engine re-targets only when the policy changes).

Every event id is built from the source's own ids and timestamps, so it is the same on
every sync and the monitor stores each fact once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import TicketChange
from rules.events import (
    Author,
    Created,
    Event,
    FieldChange,
    FieldValue,
    Message,
    Rating,
    Removal,
    Removed,
)

OPEN, OUTBOUND_EMAIL, SURVEY_FEEDBACK, FORWARD = 2, 10, 6, 8

STATUSES = {"2": "open", "3": "pending", "4": "solved", "5": "closed"}
# Custom statuses (ids from 6) are known by their name in /api/v2/ticket_fields.
STATUS_NAMES = {
    "new": "new",
    "open": "open",
    "pending": "pending",
    "waiting on customer": "pending",
    "awaiting customer": "pending",
    "on hold": "on_hold",
    "hold": "on_hold",
    "waiting on third party": "on_hold",
    "resolved": "solved",
    "solved": "solved",
    "closed": "closed",
}
PRIORITIES = {"1": "low", "2": "normal", "3": "high", "4": "urgent"}
PRIORITY_NAMES = {"1": "low", "2": "medium", "3": "high", "4": "urgent"}
CHANNELS = {1: "email", 10: "email", 2: "web", 9: "web", 3: "phone", 7: "chat"}
CHANNELS.update({5: "social", 6: "social", 13: "social"})
OTHER_SOURCES = {4, 8, 11, 12}  # forum, mobihelp, e-commerce, bot: documented, "other"
# Satisfaction answers: Freshdesk's 7-point scale (3-point surveys use 103/100/-103).
CSAT = {103: 5, 102: 4, 101: 4, 100: 3, -101: 2, -102: 2, -103: 1}

# Order of events at one instant: the ticket's creation, its messages, then what the
# update that carried them set (a reply "sent and set as pending" is reply, then status).
FIELD_SEQ, STATUS_SEQ, RATING_SEQ, REMOVED_SEQ = 100_000, 200_000, 300_000, 400_000
FIELDS_RESTATED = ("priority", "queue", "type", "tags")


@dataclass
class Account:
    """What the connector knows of one Freshdesk account: the config's overrides, the
    names of statuses and groups, who the agents are, and what it has warned about."""

    base_url: str
    statuses: Mapping[str, str] = field(default_factory=dict)  # config: id or name → status
    priorities: Mapping[str, str] = field(default_factory=dict)
    status_names: dict[str, str] = field(default_factory=dict)  # id → name (ticket_fields)
    groups: dict[int, str] = field(default_factory=dict)
    agents: set[int] = field(default_factory=set)
    _noted: list[str] = field(default_factory=list)
    _told: int = 0

    def status(self, raw: Any) -> str:
        key = str(raw)
        name = self.status_names.get(key, STATUSES.get(key, ""))
        for candidate in (key, name, name.lower()):
            if candidate and candidate in self.statuses:
                return self.statuses[candidate]
        known = STATUSES.get(key) or STATUS_NAMES.get(name.strip().lower())
        if known:
            return known
        label = f" {name!r}" if name else ""
        self.note(f"status {key}{label} has no mapping: counted as open (add it to `statuses`)")
        return "open"

    def priority(self, raw: Any) -> str:
        key = "2" if raw is None else str(raw)
        name = PRIORITY_NAMES.get(key, "")
        for candidate in (key, name, name.capitalize()):
            if candidate and candidate in self.priorities:
                return self.priorities[candidate]
        if key in PRIORITIES:
            return PRIORITIES[key]
        self.note(f"priority {key} has no mapping: counted as normal (add it to `priorities`)")
        return "normal"

    def channel(self, raw: Any) -> str:
        if raw in CHANNELS:
            return CHANNELS[raw]
        if raw not in OTHER_SOURCES and raw is not None:
            self.note(f"ticket source {raw} is not a known channel: counted as other")
        return "other"

    def queue(self, group_id: Any) -> str:
        if group_id is None:
            return ""
        return self.groups.get(group_id, str(group_id))

    def ticket_url(self, ticket: str) -> str:
        return f"{self.base_url}/a/tickets/{ticket}"

    def note(self, text: str) -> None:
        if text not in self._noted:
            self._noted.append(text)

    def take_notes(self) -> tuple[str, ...]:
        """Every warning so far when one is new (the monitor keeps the latest list)."""
        if len(self._noted) == self._told:
            return ()
        self._told = len(self._noted)
        return tuple(self._noted)


def status_choices(fields: Any) -> dict[str, str]:
    """Status id → name from ``/api/v2/ticket_fields`` (the status field's ``choices``:
    ``{"2": ["Open", "Being processed"], …}``; a list of objects is accepted too, the
    shape being unconfirmed)."""
    out: dict[str, str] = {}
    if not isinstance(fields, list):
        return out
    for item in fields:
        if not isinstance(item, dict) or (
            item.get("name") != "status" and item.get("type") != "default_status"
        ):
            continue
        choices = item.get("choices")
        if isinstance(choices, dict):
            for key, value in choices.items():
                name = value[0] if isinstance(value, list) and value else value
                if isinstance(name, dict):
                    name = name.get("label") or name.get("name")
                if isinstance(name, str):
                    out[str(key)] = name
        elif isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                ids = [choice.get(k) for k in ("id", "value", "status_id")]
                names = [choice.get(k) for k in ("label", "name", "value")]
                number = next((i for i in ids if isinstance(i, int)), None)
                name = next((n for n in names if isinstance(n, str)), None)
                if number is not None and name is not None:
                    out[str(number)] = name
    return out


def instant(value: Any) -> dt.datetime | None:
    """A Freshdesk timestamp (``...Z`` or with an offset) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fields_of(ticket: Mapping[str, Any], account: Account) -> dict[str, FieldValue]:
    """The ticket's current normalized fields (CONTRACT.md)."""
    ticket_id = str(ticket["id"])
    company, requester = ticket.get("company_id"), ticket.get("requester_id")
    return {
        "status": account.status(ticket.get("status", OPEN)),
        "priority": account.priority(ticket.get("priority")),
        "queue": account.queue(ticket.get("group_id")),
        "channel": account.channel(ticket.get("source")),
        "type": str(ticket.get("type") or ""),
        "tags": frozenset(str(tag) for tag in ticket.get("tags") or ()),
        "organization": "" if company is None else str(company),
        "requester": "" if requester is None else str(requester),
        "url": account.ticket_url(ticket_id),
        "subject": str(ticket.get("subject") or ""),
    }


def ticket_change(
    ticket: Mapping[str, Any],
    account: Account,
    conversations: Sequence[Mapping[str, Any]] = (),
    ratings: Sequence[Mapping[str, Any]] = (),
    removed: Removal | None = None,
) -> TicketChange:
    """One ticket as a change: its fields now and every event it tells of."""
    tid = str(ticket["id"])
    updated = instant(ticket.get("updated_at"))
    if updated is None:  # the callers skip such tickets: there is no time to place it at
        raise ValueError(f"ticket {tid} has no updated_at")
    created = min(instant(ticket.get("created_at")) or updated, updated)
    fields = fields_of(ticket, account)
    # An outbound email is written by an agent; every other ticket opens with the
    # requester's description (which v2 lists apart from the conversations).
    opener: Author = "agent" if ticket.get("source") == OUTBOUND_EMAIL else "customer"
    opening = {**fields, "status": account.status(OPEN)}
    events: list[Event] = [
        Created(f"{tid}-created", created, opening, by=opener),
        Message(f"{tid}-description", created, opener, public=True, seq=1),
    ]
    events += _messages(tid, conversations, account)
    if updated > created:
        events += _restated(tid, fields, updated)
    events += _statuses(tid, ticket, created, updated, account)
    events += _ratings(tid, ratings, account)
    if removed is not None:
        events.append(Removed(f"{tid}-{removed}", updated, removed, seq=REMOVED_SEQ))
    return TicketChange(tid, fields, events, created_at=created, updated_at=updated)


def author(conversation: Mapping[str, Any], agents: set[int]) -> Author:
    """Who wrote a conversation: ``incoming`` ones came from the requester's side; the
    agents list names agents; a conversation with no user is the system's."""
    if conversation.get("incoming"):
        return "customer"
    user = conversation.get("user_id")
    if user is None:
        return "system"
    return "agent" if user in agents else "customer"


def _messages(
    tid: str, conversations: Iterable[Mapping[str, Any]], account: Account
) -> list[Event]:
    dated = [(instant(c.get("created_at")), c) for c in conversations]
    ordered = sorted(((at, c) for at, c in dated if at), key=lambda x: (x[0], x[1].get("id", 0)))
    out: list[Event] = []
    for n, (at, conv) in enumerate(ordered, start=2):
        source = conv.get("source")
        if source == SURVEY_FEEDBACK:
            continue  # the rating's remark: the rating itself is the event
        # Private notes are internal; a forward goes to a third party, not the customer.
        public = not conv.get("private") and source != FORWARD
        who = author(conv, account.agents)
        out.append(Message(f"{tid}-c{conv.get('id')}", at, who, public=public, seq=n))
    return out


def _restated(tid: str, fields: Mapping[str, FieldValue], updated: dt.datetime) -> list[Event]:
    stamp = int(updated.timestamp())
    out: list[Event] = []
    for n, name in enumerate(FIELDS_RESTATED):
        value = fields[name]
        plain = ",".join(sorted(value)) if isinstance(value, frozenset) else value
        digest = hashlib.sha1(plain.encode()).hexdigest()[:10]
        out.append(
            FieldChange(f"{tid}-{name}-{stamp}-{digest}", updated, name, value, seq=FIELD_SEQ + n)
        )
    return out


STATS_STATUSES = (("reopened_at", 2), ("pending_since", 3), ("resolved_at", 4), ("closed_at", 5))


def _statuses(
    tid: str,
    ticket: Mapping[str, Any],
    created: dt.datetime,
    updated: dt.datetime,
    account: Account,
) -> list[Event]:
    stats = ticket.get("stats") or {}
    status = ticket.get("status", OPEN)
    current_at = instant(stats.get("status_updated_at"))
    if current_at is None:  # no stats: the status is known only as of the last update
        current_at = updated if status != OPEN or updated > created else created
    facts = {(max(current_at, created), 1, status)}
    for key, raw in STATS_STATUSES:
        at = instant(stats.get(key))
        if at is None or at > current_at:
            continue  # nothing happened after the current status began: not a change
        facts.add((max(at, created), 0, raw))
    out: list[Event] = []
    seen: set[tuple[dt.datetime, str]] = set()
    for at, _, raw in sorted(facts, key=lambda f: (f[0], f[1], str(f[2]))):
        if (at, str(raw)) in seen:
            continue
        seen.add((at, str(raw)))
        stamp, n = int(at.timestamp()), STATUS_SEQ + len(out)
        new = account.status(raw)
        out.append(FieldChange(f"{tid}-status-{raw}-{stamp}", at, "status", new, seq=n))
    return out


def _ratings(tid: str, ratings: Iterable[Mapping[str, Any]], account: Account) -> list[Event]:
    out: list[Event] = []
    for rating in ratings:
        at = instant(rating.get("created_at"))
        value = (rating.get("ratings") or {}).get("default_question")
        if at is None or value is None:
            continue
        score = CSAT.get(value)
        if score is None:
            account.note(f"satisfaction rating value {value} is not on Freshdesk's scale")
            continue
        out.append(Rating(f"{tid}-rating-{rating.get('id')}", at, "csat", score, seq=RATING_SEQ))
    return out
