"""Request Tracker 5's values and transactions in slamon's normalized terms (HELPDESK-APIS.md,
"Default mappings to the normalized fields" and "Request Tracker 5"; REAL-COMPONENTS.md §4).

Pure: a ticket from a REST2 search, its transaction history and what the connector looked up
(users' ``Privileged`` flag, queue names, two transactions' mail headers) go in; normalized
fields and events come out. Event ids are RT's transaction ids, so the same history read
twice gives the same events, and ``seq`` follows them (RT's times are to the second).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.events import Author, Created, Event, FieldChange, FieldValue, Message, Removed

STATUSES = {"new": "new", "open": "open", "stalled": "on_hold", "resolved": "solved",
            "rejected": "closed"}  # fmt: skip
PRIORITY_NAMES = {
    "low": "low",
    "medium": "normal",
    "normal": "normal",
    "high": "high",
    "urgent": "urgent",
}  # fmt: skip  (PriorityAsString names, any case)
PRIORITY_BANDS = ((75, "urgent"), (50, "high"), (25, "normal"), (0, "low"))
SYSTEM_USERS = ("RT_System", "Nobody")
EMAIL_INTERFACES = ("email",)  # X-RT-Interface of the creating transaction
FIELDS = {"Priority": "priority", "Queue": "queue"}  # Set transactions' Field -> ours
HEADER = re.compile(r"^([A-Za-z0-9-]+):[ \t]*(.*)$", re.MULTILINE)


class ValueMap:
    """Statuses and priorities through the defaults and the config's overrides. A value
    that neither knows maps to open / normal and is reported once (:meth:`notes`)."""

    def __init__(self, statuses: Mapping[str, str], priorities: Mapping[str, str]) -> None:
        self.statuses = {**STATUSES, **{str(k): v for k, v in statuses.items()}}
        self.priorities = {str(k): v for k, v in priorities.items()}
        self._reported: set[tuple[str, str]] = set()
        self._notes: list[str] = []

    def status(self, value: Any) -> str:
        found = self.statuses.get(str(value))
        return found if found is not None else self._unknown("status", value, "open")

    def priority(self, value: Any) -> str:
        """An override by the value as RT gives it; a PriorityAsString name; else the
        number's band (0-24 low, 25-49 normal, 50-74 high, 75+ urgent)."""
        text = "" if value is None else str(value).strip()
        if text in self.priorities:
            return self.priorities[text]
        if text == "":
            return "normal"
        if text.lower() in PRIORITY_NAMES:
            return PRIORITY_NAMES[text.lower()]
        try:
            number = int(float(text))
        except ValueError:
            return self._unknown("priority", value, "normal")
        return next((name for floor, name in PRIORITY_BANDS if number >= floor), "low")

    def notes(self) -> list[str]:
        """Warnings not yet handed out (each unknown value once per connector)."""
        out, self._notes = self._notes, []
        return out

    def _unknown(self, kind: str, value: Any, default: str) -> str:
        key = "statuses" if kind == "status" else "priorities"
        if (kind, str(value)) not in self._reported:
            self._reported.add((kind, str(value)))
            self._notes.append(
                f"rt {kind} {str(value)[:50]!r} counted as {default}; map it under `{key}:`"
            )
        return default


@dataclass
class Directory:
    """What the connector looked up: users' ``Privileged`` flags (by name), queue names (by
    id), and the mail headers of the transactions whose meaning depends on them (the
    creation's ``X-RT-Interface``, an EmailRecord's ``Auto-Submitted``)."""

    privileged: dict[str, bool] = field(default_factory=dict)
    queues: dict[str, str] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # by transaction id

    def author(self, creator: Any) -> Author:
        name = user_name(creator)
        if name in SYSTEM_USERS or not name:
            return "system"
        return "agent" if self.privileged.get(name) else "customer"

    def queue(self, value: Any) -> str:
        qid = ref_id(value)
        if not qid or qid == "0":
            return ""
        return self.queues.get(qid, qid)

    def channel(self, create_id: str | None) -> str:
        interface = self.headers.get(create_id or "", {}).get("x-rt-interface", "")
        return "email" if interface.lower() in EMAIL_INTERFACES else "web"

    def auto_reply(self, transaction_id: str) -> bool:
        submitted = self.headers.get(transaction_id, {}).get("auto-submitted", "")
        return submitted.lower().startswith("auto-replied")


def ref_id(value: Any) -> str:
    """The id of a REST2 reference (``{"id": ..., "type": ..., "_url": ...}``) or a bare id."""
    if isinstance(value, dict):
        value = value.get("id")
    return "" if value is None else str(value)


def user_name(value: Any) -> str:
    return ref_id(value)


def headers_of(text: Any) -> dict[str, str]:
    """A raw header block as lower-cased names to their first value."""
    found: dict[str, str] = {}
    for name, value in HEADER.findall(str(text or "")):
        found.setdefault(name.lower(), value.strip())
    return found


def instant(value: Any) -> dt.datetime:
    """An RT time (``2026-11-22T16:01:19Z``) as an aware UTC datetime."""
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def unset(value: Any) -> bool:
    return value in (None, "", "1970-01-01T00:00:00Z")


def ticket_fields(
    ticket: Mapping[str, Any],
    transactions: Sequence[Mapping[str, Any]],
    directory: Directory,
    mapping: ValueMap,
    url: str,
) -> dict[str, FieldValue]:
    """The ticket's normalized fields now. A deleted ticket reads as closed."""
    status = str(ticket.get("Status") or "")
    requestors = ticket.get("Requestor") or []
    requester = user_name(requestors[0]) if isinstance(requestors, list) and requestors else ""
    return {
        "status": "closed" if status == "deleted" else mapping.status(status),
        "priority": mapping.priority(ticket.get("Priority")),
        "queue": directory.queue(ticket.get("Queue")),
        "channel": directory.channel(creation(transactions)),
        "type": "",
        "tags": frozenset(),
        "subject": str(ticket.get("Subject") or ""),
        "requester": requester,
        "url": url,
    }


def creation(transactions: Sequence[Mapping[str, Any]]) -> str | None:
    return next((str(t["id"]) for t in transactions if t.get("Type") == "Create"), None)


def needs_headers(transactions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Transactions whose mail headers the history needs: the creation (its channel) and
    the mails RT sent (an auto-reply is a system message, a notification is not)."""
    return [str(t["id"]) for t in transactions if t.get("Type") in ("Create", "EmailRecord")]


def history(
    ticket: Mapping[str, Any],
    transactions: Sequence[Mapping[str, Any]],
    directory: Directory,
    mapping: ValueMap,
) -> list[Event]:
    """A ticket's events from its transactions (oldest first)."""
    ordered = sorted(transactions, key=lambda t: int(t["id"]))
    events: list[Event] = []
    for tx in ordered:
        tid, kind, at = str(tx["id"]), tx.get("Type"), instant(tx["Created"])
        seq = 2 * int(tid)
        by = directory.author(tx.get("Creator"))
        if kind == "Create":
            fields = _creation_fields(ticket, ordered, directory, mapping, tid)
            events.append(Created(tid, at, fields, by=by, seq=seq))
            events.append(Message(f"{tid}:message", at, by, public=True, seq=seq + 1))
        elif kind == "Correspond":
            events.append(Message(tid, at, by, public=True, seq=seq))
        elif kind == "Comment":
            events.append(Message(tid, at, by, public=False, seq=seq))
        elif kind == "EmailRecord" and directory.auto_reply(tid):
            events.append(Message(tid, at, "system", public=True, seq=seq))
        elif kind == "Status" or (kind == "Set" and tx.get("Field") == "Status"):
            new, old = tx.get("NewValue"), tx.get("OldValue")
            if new == "deleted":
                events.append(Removed(tid, at, "deleted", seq=seq))
            else:
                was = mapping.status(old) if old not in (None, "", "deleted") else None
                events.append(FieldChange(tid, at, "status", mapping.status(new), was, seq=seq))
        elif kind == "Set" and tx.get("Field") in FIELDS:
            name = FIELDS[str(tx["Field"])]
            new_value = _value(name, tx.get("NewValue"), directory, mapping)
            old_value = _value(name, tx.get("OldValue"), directory, mapping)
            events.append(FieldChange(tid, at, name, new_value, old_value, seq=seq))
    return events


def _creation_fields(
    ticket: Mapping[str, Any],
    ordered: Sequence[Mapping[str, Any]],
    directory: Directory,
    mapping: ValueMap,
    create_id: str,
) -> dict[str, FieldValue]:
    """The fields at creation: the first later change's old value, else the value now."""
    status, priority, queue = ticket.get("Status"), ticket.get("Priority"), ticket.get("Queue")
    for tx in reversed(ordered):  # the earliest change wins
        kind, name = tx.get("Type"), tx.get("Field")
        if kind == "Status" or (kind == "Set" and name == "Status"):
            status = tx.get("OldValue")
        elif kind == "Set" and name == "Priority":
            priority = tx.get("OldValue")
        elif kind == "Set" and name == "Queue":
            queue = tx.get("OldValue")
    return {
        "status": mapping.status(status) if status not in (None, "", "deleted") else "new",
        "priority": mapping.priority(priority),
        "queue": directory.queue(queue),
        "channel": directory.channel(create_id),
        "type": "",
        "tags": frozenset(),
    }


def _value(name: str, value: Any, directory: Directory, mapping: ValueMap) -> FieldValue:
    if name == "priority":
        return mapping.priority(value)
    return directory.queue(value)
