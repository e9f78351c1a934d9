"""Zendesk's values and audits in slamon's normalized terms (HELPDESK-APIS.md, "Default
mappings to the normalized fields" and "Zendesk Support REST API" §4-§6 and §8).

Pure: a ticket from the incremental export, its audits and the roles and group names the
connector looked up go in; normalized fields and events come out. Event ids are Zendesk's
own (the audit id for the creation), so the same history read twice gives the same events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.events import Author, Created, Event, FieldChange, FieldValue, Message, Rating, Removed

STATUSES = {"new": "new", "open": "open", "pending": "pending", "hold": "on_hold",
            "solved": "solved", "closed": "closed"}  # fmt: skip
PRIORITIES = {name: name for name in ("low", "normal", "high", "urgent")}
CHANNELS = {"email": "email", "web": "web", "chat": "chat", "native_messaging": "chat",
            "voice": "phone", "api": "api", "twitter": "social", "facebook": "social",
            "any_channel": "social"}  # fmt: skip
AGENT_ROLES = ("agent", "admin")
RULE_RELS = ("trigger", "automation")  # via.source.rel of changes made by business rules
MERGE_VIA = ("merge", 19, "19")  # via type 19: the ticket was closed by a merge
SCORES = {"good": 5, "bad": 1}  # csat; "offered"/"unoffered" are no answer
FIELDS = {
    "status": "status",
    "priority": "priority",
    "group_id": "queue",
    "type": "type",
    "tags": "tags",
}  # fmt: skip  (Zendesk's field_name -> ours)


class ValueMap:
    """Statuses and priorities through the defaults and the config's overrides. A value
    that neither knows maps to open / normal and is reported once (:meth:`notes`)."""

    def __init__(self, statuses: Mapping[str, str], priorities: Mapping[str, str]) -> None:
        self.statuses = {**STATUSES, **statuses}
        self.priorities = {**PRIORITIES, **priorities}
        self._reported: set[tuple[str, str]] = set()
        self._notes: list[str] = []

    def status(self, value: Any) -> str:
        return self._lookup("status", self.statuses, value, "open", "statuses")

    def priority(self, value: Any) -> str:
        if value is None or value == "":
            return self.priorities.get("null", "normal")
        return self._lookup("priority", self.priorities, value, "normal", "priorities")

    @staticmethod
    def channel(via: Any) -> str:
        channel = via.get("channel") if isinstance(via, dict) else None
        return CHANNELS.get(str(channel), "other")

    def notes(self) -> list[str]:
        """Warnings not yet handed out (each unknown value once per connector)."""
        out, self._notes = self._notes, []
        return out

    def _lookup(self, kind: str, table: dict[str, str], value: Any, default: str, key: str) -> str:
        found = table.get(str(value))
        if found is not None:
            return found
        if (kind, str(value)) not in self._reported:
            self._reported.add((kind, str(value)))
            self._notes.append(
                f"zendesk {kind} {str(value)[:50]!r} counted as {default}; map it under `{key}:`"
            )
        return default


@dataclass
class Directory:
    """What the connector looked up, by id: users (their ``role`` and ``email``) and the
    names of groups."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)

    def queue(self, group_id: Any) -> str:
        if group_id is None or group_id == "":
            return ""
        return self.groups.get(str(group_id), str(group_id))

    def author(self, user_id: Any, *vias: Any) -> Author:
        """Business rules are ``system`` whoever they act as; then agents and admins are
        ``agent``, everyone else is ``customer``."""
        if any(by_rule(via) for via in vias) or str(user_id) == "-1":
            return "system"
        role = self.users.get(str(user_id), {}).get("role")
        return "agent" if role in AGENT_ROLES else "customer"

    def person(self, user_id: Any) -> str:
        """A user as the board shows them: the address, else the id."""
        if user_id is None:
            return ""
        user = self.users.get(str(user_id), {})
        return str(user.get("email") or user.get("name") or user_id)


def by_rule(via: Any) -> bool:
    if not isinstance(via, dict):
        return False
    source = via.get("source")
    rel = source.get("rel") if isinstance(source, dict) else None
    return rel in RULE_RELS or via.get("channel") == "rule"


def merged_by(via: Any) -> bool:
    return isinstance(via, dict) and (via.get("channel") in MERGE_VIA or via.get("id") == 19)


def instant(value: Any) -> dt.datetime:
    """A Zendesk time (RFC 3339 text, or Unix seconds) as an aware UTC datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def user_ids(ticket: Mapping[str, Any], audits: Iterable[Mapping[str, Any]]) -> set[str]:
    """Everyone whose role the history needs: audit and comment authors, the requester."""
    ids = {str(ticket.get("requester_id"))}
    for audit in audits:
        ids.add(str(audit.get("author_id")))
        ids.update(str(e.get("author_id")) for e in audit.get("events") or () if e.get("author_id"))
    return {i for i in ids if i.isdigit()}


def group_ids(ticket: Mapping[str, Any], audits: Iterable[Mapping[str, Any]]) -> set[str]:
    ids = {str(ticket.get("group_id"))}
    for audit in audits:
        for item in audit.get("events") or ():
            if item.get("field_name") == "group_id":
                ids.add(str(item.get("value")))
    return {i for i in ids if i.isdigit()}


def ticket_fields(
    ticket: Mapping[str, Any], directory: Directory, mapping: ValueMap, url: str, gone: bool
) -> dict[str, FieldValue]:
    """The ticket's normalized fields now. A deleted (``gone``) ticket reads as closed, so
    one deleted before slamon saw its history does not count as open."""
    return {
        "status": "closed" if gone else mapping.status(ticket.get("status")),
        "priority": mapping.priority(ticket.get("priority")),
        "queue": directory.queue(ticket.get("group_id")),
        "channel": mapping.channel(ticket.get("via")),
        "type": str(ticket.get("type") or ""),
        "tags": frozenset(str(tag) for tag in ticket.get("tags") or ()),
        "subject": str(ticket.get("subject") or ""),
        "requester": directory.person(ticket.get("requester_id")),
        "url": url,
    }


def history(
    ticket: Mapping[str, Any],
    audits: Sequence[Mapping[str, Any]] | None,
    directory: Directory,
    mapping: ValueMap,
) -> list[Event]:
    """A ticket's events: its audits in order (``seq`` counts through every audit event,
    the creation first), its satisfaction answer, its deletion. ``audits`` None: they are
    gone (404), so the ticket was deleted."""
    events: list[Event] = []
    seq = 0
    created = False
    for audit in sorted(audits or (), key=lambda a: (instant(a["created_at"]), a["id"])):
        at = instant(audit["created_at"])
        via = audit.get("via")
        items = [item for item in audit.get("events") or () if isinstance(item, dict)]
        creates = [item for item in items if item.get("type") == "Create"]
        if creates and not created:
            created = True
            by = directory.author(audit.get("author_id"), via)
            fields = _creation_fields(creates, via, directory, mapping)
            events.append(Created(str(audit["id"]), at, fields, by=by, seq=seq))
            seq += 1
        for item in items:
            event = _event(item, audit, at, seq, directory, mapping)
            if event is not None:
                events.append(event)
            seq += 1
    rating = _rating(ticket, seq)
    if rating is not None:
        events.append(rating)
    if audits is None or ticket.get("status") == "deleted":
        when = ticket.get("generated_timestamp") or ticket.get("updated_at")
        events.append(Removed(f"{ticket['id']}:deleted", instant(when), "deleted", seq=seq + 1))
    return events


def _creation_fields(
    creates: list[dict[str, Any]], via: Any, directory: Directory, mapping: ValueMap
) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {"status": "new", "priority": "normal", "queue": "",
                                     "channel": mapping.channel(via), "type": "",
                                     "tags": frozenset()}  # fmt: skip
    for item in creates:
        name = FIELDS.get(str(item.get("field_name")))
        if name is not None and not (name == "status" and item.get("value") == "deleted"):
            fields[name] = _value(name, item.get("value"), directory, mapping)
    return fields


def _event(
    item: dict[str, Any],
    audit: Mapping[str, Any],
    at: dt.datetime,
    seq: int,
    directory: Directory,
    mapping: ValueMap,
) -> Event | None:
    kind, eid, via = item.get("type"), str(item["id"]), audit.get("via")
    if kind == "Comment":
        # A merge writes its own note on the ticket: the merge's, not a reply.
        merge = merged_by(via)
        author = (
            "system" if merge else directory.author(item.get("author_id"), via, item.get("via"))
        )
        return Message(eid, at, author, public=item.get("public") is not False, seq=seq)
    if kind != "Change":
        return None  # Create (read into Created), Notification, VoiceComment, ...
    name = FIELDS.get(str(item.get("field_name")))
    if name is None:
        return None
    value = item.get("value")
    if name == "status" and value == "deleted":
        return Removed(eid, at, "deleted", seq=seq)
    if name == "status" and value == "closed" and (merged_by(via) or merged_by(item.get("via"))):
        return Removed(eid, at, "merged", seq=seq)
    old = item.get("previous_value")
    new = _value(name, value, directory, mapping)
    was = None if old is None and name == "status" else _value(name, old, directory, mapping)
    return FieldChange(eid, at, name, new, old=was, seq=seq)


def _value(name: str, value: Any, directory: Directory, mapping: ValueMap) -> FieldValue:
    if name == "status":
        return mapping.status(value)
    if name == "priority":
        return mapping.priority(value)
    if name == "queue":
        return directory.queue(value)
    if name == "tags":
        tags = value.split() if isinstance(value, str) else value or ()
        return frozenset(str(tag) for tag in tags)
    return str(value or "")


def _rating(ticket: Mapping[str, Any], seq: int) -> Rating | None:
    """The ticket's satisfaction answer. Its id names the answer and when it was given, so
    a changed answer (bad, then good) is a new event and the latest counts."""
    rating = ticket.get("satisfaction_rating")
    if not isinstance(rating, dict) or rating.get("score") not in SCORES:
        return None
    score = str(rating["score"])
    when = rating.get("updated_at") or rating.get("created_at") or ticket.get("updated_at")
    eid = f"rating:{rating.get('id', ticket['id'])}:{score}:{when}"
    return Rating(eid, instant(when), "csat", SCORES[score], seq=seq)
