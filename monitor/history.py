"""Events between their rules form and their stored form."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rules.events import Created, Event, FieldChange, FieldValue, Message, Rating, Removed

UTC = dt.UTC


def _plain(value: FieldValue | None) -> Any:
    return sorted(value) if isinstance(value, frozenset) else value


def _field(value: Any) -> FieldValue:
    return frozenset(value) if isinstance(value, list) else str(value)


def to_row(event: Event) -> tuple[str, dict[str, Any]]:
    """(kind, data) for storage."""
    if isinstance(event, Created):
        return "created", {
            "by": event.by,
            "fields": {k: _plain(v) for k, v in event.fields.items()},
        }
    if isinstance(event, Message):
        return "message", {"author": event.author, "public": event.public}
    if isinstance(event, FieldChange):
        return "field", {"field": event.field, "new": _plain(event.new), "old": _plain(event.old)}
    if isinstance(event, Rating):
        return "rating", {"survey": event.survey, "score": event.score}
    return "removed", {"reason": event.reason}


def from_row(source_id: str, kind: str, at: float, seq: int, data: dict[str, Any]) -> Event:
    when = dt.datetime.fromtimestamp(at, UTC)
    if kind == "created":
        fields = {k: _field(v) for k, v in data.get("fields", {}).items()}
        return Created(source_id, when, fields, by=data.get("by", "customer"), seq=seq)
    if kind == "message":
        return Message(source_id, when, data["author"], public=data.get("public", True), seq=seq)
    if kind == "field":
        old = data.get("old")
        return FieldChange(
            source_id,
            when,
            data["field"],
            _field(data["new"]),
            old=None if old is None else _field(old),
            seq=seq,
        )
    if kind == "rating":
        return Rating(source_id, when, data["survey"], int(data["score"]), seq=seq)
    return Removed(source_id, when, data.get("reason", "deleted"), seq=seq)


def describe(kind: str, data: dict[str, Any]) -> str:
    """One line for a ticket's timeline in the API and on the board."""
    if kind == "created":
        return f"created by {data.get('by', 'customer')}"
    if kind == "message":
        visibility = "public" if data.get("public", True) else "internal"
        return f"{visibility} message from {data['author']}"
    if kind == "field":
        new = data["new"]
        return f"{data['field']} → {', '.join(new) if isinstance(new, list) else new}"
    if kind == "rating":
        return f"{data['survey']} answer {data['score']}"
    return str(data.get("reason", "removed"))
