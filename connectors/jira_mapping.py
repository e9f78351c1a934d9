"""Jira Service Management's values and history in slamon's normalized terms
(HELPDESK-APIS.md, "Default mappings to the normalized fields" and "JSM Cloud + Zammad
REST", A2-A5).

Pure: an issue from the enhanced search, its changelog, its comments, its CSAT feedback and
what the connector looked up (the site's statuses, which custom fields hold the request
type and the request participants) go in; normalized fields and events come out. Event ids
are Jira's own (changelog and comment ids), so the same history read twice gives the same
events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.events import Author, Created, Event, FieldChange, FieldValue, Message, Rating

# By status name first (case-insensitive), then by the status's category.
STATUS_NAMES = {"waiting for customer": "pending", "pending": "on_hold", "resolved": "solved",
                "closed": "closed", "canceled": "closed", "cancelled": "closed"}  # fmt: skip
CATEGORIES = {"new": "new", "indeterminate": "open", "done": "solved"}
PRIORITIES = {"lowest": "low", "low": "low", "medium": "normal", "high": "high",
              "highest": "urgent"}  # fmt: skip
# JQL ``request-channel-type`` values (there is no REST field for it); none at all -> web.
CHANNELS = {"email": "email", "portal": "web", "api": "api", "jira": "other"}
REQUEST_TYPE_FIELD = "com.atlassian.servicedesk:vp-origin"
PARTICIPANTS_FIELD = "com.atlassian.servicedesk:sd-request-participants"
# Changelog ``field`` -> ours. Request-type (queue) changes are not read: how the changelog
# names them is not documented.
FIELDS = {"status": "status", "priority": "priority", "labels": "tags", "issuetype": "type"}
# ``seq`` among events at one instant: the creation, the description, comments, changes.
RANK_CREATED, RANK_DESCRIPTION, RANK_COMMENT, RANK_CHANGE, RANK_RATING = (
    0, 1_000_000, 2_000_000, 3_000_000, 4_000_000
)  # fmt: skip


class ValueMap:
    """Statuses and priorities through the defaults and the config's overrides (keyed by
    the Jira name, any case). A value neither knows maps to open / normal and is reported
    once (:meth:`notes`)."""

    def __init__(self, statuses: Mapping[str, str], priorities: Mapping[str, str]) -> None:
        self.statuses = {**STATUS_NAMES, **{str(k).lower(): v for k, v in statuses.items()}}
        self.priorities = {**PRIORITIES, **{str(k).lower(): v for k, v in priorities.items()}}
        self._reported: set[tuple[str, str]] = set()
        self._notes: list[str] = []

    def status(self, name: Any, category: Any) -> str:
        found = self.statuses.get(str(name).lower()) or CATEGORIES.get(str(category))
        return found or self._unknown("status", name, "open", "statuses")

    def priority(self, name: Any) -> str:
        if name is None or name == "":
            return self.priorities.get("null", "normal")
        found = self.priorities.get(str(name).lower())
        return found or self._unknown("priority", name, "normal", "priorities")

    @staticmethod
    def channel(value: str | None) -> str:
        return "web" if value is None else CHANNELS.get(value, "other")

    def notes(self) -> list[str]:
        """Warnings not yet handed out (each unknown value once per connector)."""
        out, self._notes = self._notes, []
        return out

    def _unknown(self, kind: str, value: Any, default: str, key: str) -> str:
        if (kind, str(value)) not in self._reported:
            self._reported.add((kind, str(value)))
            self._notes.append(
                f"jira {kind} {str(value)[:50]!r} counted as {default}; map it under `{key}:`"
            )
        return default


@dataclass
class Site:
    """What the connector looked up once: the statuses (id -> name and category key) and
    the ids of the request-type and request-participants custom fields."""

    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)
    request_type: str | None = None
    participants: str | None = None

    def category(self, status_id: Any, name: Any) -> str | None:
        found = self.statuses.get(str(status_id))
        if found is None:
            found = next((s for s in self.statuses.values() if s[0] == name), None)
        return found[1] if found else None

    def extra_fields(self) -> list[str]:
        return [f for f in (self.request_type, self.participants) if f]


def instant(value: Any) -> dt.datetime:
    """A Jira time (``2022-02-11T06:49:08.130-0600``, or epoch milliseconds as bulk
    changelogs give) as an aware UTC datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, dict):  # servicedeskapi DateDTO
        return instant(value.get("iso8601") or value["epochMillis"])
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def author(user: Any, customers: frozenset[str]) -> Author:
    """``app`` accounts are system; portal customers, the reporter and the request's
    participants are customers; other Atlassian accounts are agents."""
    if not isinstance(user, dict):
        return "customer"  # an anonymous or deleted author
    kind = user.get("accountType")
    if kind == "app":
        return "system"
    if kind == "atlassian" and user.get("accountId") not in customers:
        return "agent"
    return "customer"


def customers_of(issue: Mapping[str, Any], site: Site) -> frozenset[str]:
    fields = issue.get("fields") or {}
    people = [fields.get("reporter")]
    if site.participants:
        people += list(fields.get(site.participants) or ())
    return frozenset(p["accountId"] for p in people if isinstance(p, dict) and "accountId" in p)


def queue_of(fields: Mapping[str, Any], site: Site) -> str:
    """The request type's name, else the project's name."""
    value = fields.get(site.request_type) if site.request_type else None
    kind = value.get("requestType") if isinstance(value, dict) else None
    if isinstance(kind, dict) and kind.get("name"):
        return str(kind["name"])
    project = fields.get("project") or {}
    return str(project.get("name") or project.get("key") or "")


def person(user: Any) -> str:
    if not isinstance(user, dict):
        return ""
    return str(user.get("emailAddress") or user.get("displayName") or user.get("accountId") or "")


def ticket_fields(
    issue: Mapping[str, Any], site: Site, mapping: ValueMap, channel: str, url: str
) -> dict[str, FieldValue]:
    fields = issue["fields"]
    status = fields.get("status") or {}
    category = (status.get("statusCategory") or {}).get("key")
    return {
        "status": mapping.status(status.get("name"), category),
        "priority": mapping.priority((fields.get("priority") or {}).get("name")),
        "queue": queue_of(fields, site),
        "channel": channel,
        "type": str((fields.get("issuetype") or {}).get("name") or ""),
        "tags": frozenset(str(label) for label in fields.get("labels") or ()),
        "subject": str(fields.get("summary") or ""),
        "requester": person(fields.get("reporter")),
        "url": url,
    }


def history(
    issue: Mapping[str, Any],
    changelog: Sequence[Mapping[str, Any]],
    comments: Sequence[Mapping[str, Any]],
    feedback: Mapping[str, Any] | None,
    site: Site,
    mapping: ValueMap,
    channel: str,
) -> list[Event]:
    """An issue's events: its creation (with the fields it was created with, read back
    from the changelog), the description as the first message, every comment, the status,
    priority, label and issue-type changes, and the CSAT answer."""
    iid, fields = str(issue["id"]), issue["fields"]
    customers = customers_of(issue, site)
    created = instant(fields["created"])
    creator = author(fields.get("creator") or fields.get("reporter"), customers)
    now = ticket_fields(issue, site, mapping, channel, "")
    changes: list[tuple[dt.datetime, str, int, Mapping[str, Any]]] = []
    for entry in changelog:
        at = instant(entry["created"])
        for n, item in enumerate(entry.get("items") or ()):
            if isinstance(item, dict) and FIELDS.get(str(item.get("field"))):
                changes.append((at, str(entry["id"]), n, item))
    changes.sort(key=lambda c: (c[0], int(c[1]) if c[1].isdigit() else 0, c[2]))
    initial = {k: now[k] for k in ("status", "priority", "queue", "channel", "type", "tags")}
    firsts: set[str] = set()
    for _, _, _, item in changes:
        name = FIELDS[str(item["field"])]
        if name not in firsts:  # the value before its first change is the one it began with
            firsts.add(name)
            initial[name] = _value(name, item, "from", site, mapping)
    events: list[Event] = [Created(f"{iid}:created", created, initial, by=creator)]
    if fields.get("description"):
        events.append(Message(f"{iid}:description", created, creator, seq=RANK_DESCRIPTION))
    for comment in comments:
        events.append(
            Message(
                f"comment:{comment['id']}",
                instant(comment["created"]),
                author(comment.get("author"), customers),
                public=comment.get("jsdPublic") is not False,
                seq=RANK_COMMENT,
            )
        )
    solved: dt.datetime | None = None
    for at, hid, n, item in changes:
        name = FIELDS[str(item["field"])]
        new = _value(name, item, "to", site, mapping)
        old = _value(name, item, "from", site, mapping)
        events.append(FieldChange(f"changelog:{hid}:{n}", at, name, new, old=old,
                                  seq=RANK_CHANGE + n))  # fmt: skip
        if name == "status" and new in ("solved", "closed"):
            solved = at
    rating = _rating(iid, feedback, solved or instant(fields.get("updated") or created))
    if rating is not None:
        events.append(rating)
    return events


def _value(
    name: str, item: Mapping[str, Any], side: str, site: Site, mapping: ValueMap
) -> FieldValue:
    text = item.get(f"{side}String")
    if name == "status":
        return mapping.status(text, site.category(item.get(side), text))
    if name == "priority":
        return mapping.priority(text)
    if name == "tags":
        return frozenset(str(text or "").split())
    return str(text or "")


def _rating(iid: str, feedback: Mapping[str, Any] | None, at: dt.datetime) -> Rating | None:
    """JSM's CSAT answer (1-5). The feedback carries no time: it is stamped at the
    resolution it rates (the latest move to a done status), and a new resolution with an
    answer is a new answer."""
    if not isinstance(feedback, dict) or feedback.get("type", "csat") != "csat":
        return None
    score = feedback.get("rating")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        return None
    eid = f"{iid}:csat:{score}:{int(at.timestamp())}"
    return Rating(eid, at, "csat", score, seq=RANK_RATING)
