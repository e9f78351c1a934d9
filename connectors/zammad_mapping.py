"""Zammad's values, articles and ticket history in slamon's normalized terms
(HELPDESK-APIS.md, "Default mappings to the normalized fields" and "B. Zammad (REST API v1)"
B2-B6).

Pure: a ticket from the search, its articles, its history entries, its current tags and
the reference data the connector read (states with their state types, priorities, groups,
users) go in; normalized fields and events come out. Event ids are Zammad's own, prefixed
by the table they come from (``a`` articles, ``h`` history: two id spaces), so the same
history read twice gives the same events.

Tags: the current set comes from ``GET /api/v1/tags?object=Ticket&o_id=N``; their times
from the history, where Zammad logs every tag added to or removed from a ticket as an entry
of ``type`` ``added``/``removed``, ``object`` ``Ticket``, ``attribute`` ``tag`` and the
tag's name in ``value_to`` (B5's entry keys; the entries themselves are written by
zammad/zammad ``app/models/tag/writes_to_ticket_history.rb``). The set at creation is the
current set with the logged changes undone, so a ticket whose tags were never logged
(imported) has them from its creation, as the other fields do; a set the log does not
explain (a tag renamed or merged by an admin, unlogged) becomes one change at the ticket's
``updated_at``.

``type``: HELPDESK-APIS.md names no ticket type attribute for Zammad, so ``type`` is "".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.events import (
    Author,
    Created,
    Event,
    FieldChange,
    FieldValue,
    Message,
    Removal,
    Removed,
)

# State types by their seed ids (B6); Zammad maps each state to one, we map the type.
STATE_TYPES = {1: "new", 2: "open", 3: "pending reminder", 4: "pending action", 5: "closed",
               6: "merged", 7: "removed"}  # fmt: skip
TYPE_STATUSES = {"new": "new", "open": "open", "pending reminder": "pending",
                 "pending action": "pending", "closed": "closed"}  # fmt: skip
REMOVALS: dict[str, Removal] = {"merged": "merged", "removed": "deleted"}  # type -> reason
# The default states (B6 seeds): name -> state type id; /ticket_states says what a site has.
SEED_STATES = {"new": 1, "open": 2, "pending reminder": 3, "closed": 5, "merged": 6,
               "removed": 7, "pending close": 4}  # fmt: skip
PRIORITY_PREFIXES = {"1": "low", "2": "normal", "3": "high"}  # "1 low", "2 normal", "3 high"
# Article types (B4 seeds) by id, for a ticket's create_article_type_id.
ARTICLE_TYPES = {1: "email", 2: "sms", 3: "chat", 4: "fax", 5: "phone", 6: "twitter status",
                 7: "twitter direct-message", 8: "facebook feed post",
                 9: "facebook feed comment", 10: "note", 11: "web",
                 12: "telegram personal-message", 13: "facebook direct-message"}  # fmt: skip
CHANNELS = {"email": "email", "phone": "phone", "web": "web", "chat": "chat"}
SOCIAL = ("sms", "twitter", "facebook", "telegram", "whatsapp")  # by type-name prefix
SENDERS = {1: "Agent", 2: "Customer", 3: "System"}  # B4 seed ids
AUTHORS: dict[str, Author] = {"Agent": "agent", "Customer": "customer", "System": "system"}
FIELDS = {"state": "status", "priority": "priority", "group": "queue"}  # history attribute
TAG = "tag"  # the history attribute of a tag added to / removed from a ticket


class ValueMap:
    """States and priorities through the defaults and the config's overrides.

    A state maps by its name in ``statuses`` first, then by its state type's name there,
    then by the type's default; a priority by its name in ``priorities``, then by the number
    its name starts with. A value that none of these knows maps to open / normal and is
    reported once (:meth:`notes`). ``types`` (state name -> state type name) starts with
    Zammad's seeds; the connector replaces it with the site's ``/ticket_states``."""

    def __init__(self, statuses: Mapping[str, str], priorities: Mapping[str, str]) -> None:
        self.statuses = dict(statuses)
        self.priorities = dict(priorities)
        self.types = {name: STATE_TYPES[tid] for name, tid in SEED_STATES.items()}
        self._reported: set[tuple[str, str]] = set()
        self._notes: list[str] = []

    def state_type(self, state: Any) -> str | None:
        return self.types.get(str(state))

    def removal(self, state: Any) -> Removal | None:
        """``merged`` / ``deleted`` for a state of type merged / removed."""
        kind = self.state_type(state)
        return REMOVALS.get(kind) if kind is not None else None

    def status(self, state: Any) -> str:
        name, kind = str(state), self.state_type(state)
        found = self.statuses.get(name)
        if found is None and kind is not None:
            found = self.statuses.get(kind) or TYPE_STATUSES.get(kind)
            if found is None and kind in REMOVALS:
                found = "closed"  # the Removed event says what happened
        return found if found is not None else self._unknown("state", name, "open", "statuses")

    def priority(self, value: Any) -> str:
        if value is None or value == "":
            return "normal"
        name = str(value)
        found = self.priorities.get(name) or PRIORITY_PREFIXES.get(name.split(" ", 1)[0])
        return (
            found if found is not None else self._unknown("priority", name, "normal", "priorities")
        )

    @staticmethod
    def channel(article_type: Any) -> str:
        name = str(article_type or "")
        if name in CHANNELS:
            return CHANNELS[name]
        return "social" if name.startswith(SOCIAL) else "other"

    def notes(self) -> list[str]:
        """Warnings not yet handed out (each unknown value once per connector)."""
        out, self._notes = self._notes, []
        return out

    def _unknown(self, kind: str, value: str, default: str, key: str) -> str:
        if (kind, value) not in self._reported:
            self._reported.add((kind, value))
            self._notes.append(
                f"zammad {kind} {value[:50]!r} counted as {default}; map it under `{key}:`"
            )
        return default


@dataclass
class Reference:
    """What the connector read, by id: states (name and state type id), priority and group
    names, and users (their address). An expanded ticket's names win over these."""

    states: dict[int, tuple[str, int]] = field(default_factory=dict)
    priorities: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    users: dict[int, str] = field(default_factory=dict)

    def state(self, ticket: Mapping[str, Any]) -> str:
        if isinstance(ticket.get("state"), str):
            return str(ticket["state"])
        found = self.states.get(_int(ticket.get("state_id")))
        return found[0] if found else str(ticket.get("state_id"))

    def priority(self, ticket: Mapping[str, Any]) -> str:
        if isinstance(ticket.get("priority"), str):
            return str(ticket["priority"])
        return self.priorities.get(_int(ticket.get("priority_id")), str(ticket.get("priority_id")))

    def group(self, ticket: Mapping[str, Any]) -> str:
        if isinstance(ticket.get("group"), str):
            return str(ticket["group"])
        gid = ticket.get("group_id")
        return "" if gid is None else self.groups.get(_int(gid), str(gid))

    def person(self, user_id: Any, expanded: Any = None) -> str:
        if user_id is None:
            return ""
        return (
            self.users.get(_int(user_id))
            or (expanded if isinstance(expanded, str) else "")
            or str(user_id)
        )

    def learn_users(self, assets: Any) -> None:
        """Users from an ``assets`` map (search 5.x, history): their address, else login."""
        users = assets.get("User") if isinstance(assets, dict) else None
        for uid, user in (users or {}).items() if isinstance(users, dict) else ():
            if isinstance(user, dict) and (user.get("email") or user.get("login")):
                self.users[_int(uid)] = str(user.get("email") or user.get("login"))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def instant(value: Any) -> dt.datetime:
    """A Zammad time (``2025-05-13T08:37:16.572Z``; history values' ``... UTC``) as UTC."""
    text = str(value).strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    when = dt.datetime.fromisoformat(text)
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def channel_of(ticket: Mapping[str, Any], articles: Sequence[Mapping[str, Any]]) -> str:
    """The create article type's name: expanded, else by its seed id, else the first
    article's type."""
    name = ticket.get("create_article_type")
    if not isinstance(name, str):
        name = ARTICLE_TYPES.get(_int(ticket.get("create_article_type_id")))
    if name is None and articles:
        name = min(articles, key=lambda a: _int(a.get("id"))).get("type")
    return str(name or "")


def creator_of(ticket: Mapping[str, Any], articles: Sequence[Mapping[str, Any]]) -> Author:
    """Who opened the ticket: the create article's sender, else the first article's."""
    sender = ticket.get("create_article_sender")
    if not isinstance(sender, str):
        sender = SENDERS.get(_int(ticket.get("create_article_sender_id")))
    if sender is None and articles:
        sender = min(articles, key=lambda a: _int(a.get("id"))).get("sender")
    return AUTHORS.get(str(sender), "customer")


def ticket_fields(
    ticket: Mapping[str, Any],
    articles: Sequence[Mapping[str, Any]],
    ref: Reference,
    mapping: ValueMap,
    url: str,
    gone: bool,
    tags: frozenset[str] = frozenset(),
) -> dict[str, FieldValue]:
    """The ticket's normalized fields now (``tags`` as the tags endpoint gave them). A gone
    ticket (its articles 404) or one in a merged / removed state reads as closed, so it
    does not count as open."""
    return {
        "status": "closed" if gone else mapping.status(ref.state(ticket)),
        "priority": mapping.priority(ref.priority(ticket)),
        "queue": ref.group(ticket),
        "channel": mapping.channel(channel_of(ticket, articles)),
        "type": "",
        "tags": tags,
        "subject": str(ticket.get("title") or ""),
        "requester": ref.person(ticket.get("customer_id"), ticket.get("customer")),
        "url": url,
    }


def history(
    ticket: Mapping[str, Any],
    articles: Sequence[Mapping[str, Any]] | None,
    entries: Sequence[Mapping[str, Any]] | None,
    ref: Reference,
    mapping: ValueMap,
    tags: frozenset[str] = frozenset(),
) -> list[Event]:
    """A ticket's events: its creation, every article as a message, every state, priority
    and group change, every tag added or removed, and its merge or removal. ``seq`` is the
    position in the ticket's history (which logs each article's creation too, so a reply
    and the state change of the same update keep their order). ``tags``: the current set.
    ``articles``/``entries`` None: the ticket is gone."""
    tid = ticket["id"]
    if articles is None or entries is None:
        return [Removed(f"t{tid}:deleted", instant(ticket["updated_at"]), "deleted")]
    ordered = sorted(
        (e for e in entries if isinstance(e, dict)),
        key=lambda e: (instant(e["created_at"]), _int(e.get("id"))),
    )
    have = initial_tags(tags, ordered)
    events: list[Event] = [_created(ticket, articles, ordered, ref, mapping, have)]
    written: dict[int, int] = {}  # article id -> its position in the history
    for seq, entry in enumerate(ordered, start=1):
        kind, obj = entry.get("type"), entry.get("object")
        if kind == "created" and obj == "Ticket::Article":
            written.setdefault(_int(entry.get("o_id")), seq)
        elif kind == "updated" and obj == "Ticket" and entry.get("attribute") in FIELDS:
            events.append(_change(entry, seq, ref, mapping))
        elif _tagging(entry):
            now = _tagged(have, entry)
            if now != have:
                events.append(FieldChange(f"h{entry['id']}", instant(entry["created_at"]),
                                          "tags", now, old=have, seq=seq))  # fmt: skip
            have = now
    late = len(ordered) + 1
    if have != tags:  # the log does not explain the current set: as of the last update
        at = instant(ticket["updated_at"])
        events.append(FieldChange(f"t{tid}:tags@{_iso_key(at)}", at, "tags", tags, old=have,
                                  seq=late + len(articles)))  # fmt: skip
    for n, article in enumerate(sorted(articles, key=lambda a: _int(a.get("id")))):
        seq = written.get(_int(article.get("id")), late + n)
        author = AUTHORS.get(str(article.get("sender")), "customer")
        if article.get("sender") is None:
            author = AUTHORS.get(SENDERS.get(_int(article.get("sender_id")), ""), "customer")
        public = article.get("internal") is not True
        events.append(Message(f"a{article['id']}", instant(article["created_at"]), author,
                              public=public, seq=seq))  # fmt: skip
    reason = mapping.removal(ref.state(ticket))
    if reason is not None and not any(isinstance(e, Removed) for e in events):
        # Merged or removed without the history saying when: as of its last update.
        at = instant(ticket["updated_at"])
        events.append(Removed(f"t{tid}:{reason}", at, reason, seq=late + len(articles)))
    return events


def _created(
    ticket: Mapping[str, Any],
    articles: Sequence[Mapping[str, Any]],
    ordered: Sequence[Mapping[str, Any]],
    ref: Reference,
    mapping: ValueMap,
    tags: frozenset[str],
) -> Created:
    """The creation with the fields the ticket had then: each field's value before its
    first logged change, else its value now; ``tags`` as :func:`initial_tags` found."""
    first = {"state": ref.state(ticket), "priority": ref.priority(ticket),
             "group": ref.group(ticket)}  # fmt: skip
    found: set[str] = set()
    for entry in ordered:
        attribute = entry.get("attribute")
        if entry.get("type") == "updated" and entry.get("object") == "Ticket":
            if attribute in first and attribute not in found:
                found.add(str(attribute))
                first[str(attribute)] = _name(entry, "from", attribute, ref) or ""
    made = next(
        (
            (n, e)
            for n, e in enumerate(ordered, start=1)
            if e.get("type") == "created" and e.get("object") == "Ticket"
        ),
        None,
    )
    eid = f"h{made[1]['id']}" if made else f"t{ticket['id']}:created"
    fields: dict[str, FieldValue] = {
        "status": mapping.status(first["state"]),
        "priority": mapping.priority(first["priority"]),
        "queue": first["group"],
        "channel": mapping.channel(channel_of(ticket, articles)),
        "type": "",
        "tags": tags,
    }
    by = creator_of(ticket, articles)
    return Created(eid, instant(ticket["created_at"]), fields, by=by, seq=made[0] if made else 0)


def initial_tags(current: frozenset[str], ordered: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The tags at creation: the current set with every logged tag change undone, newest
    first (an ``added`` tag was not there before, a ``removed`` one was)."""
    have = set(current)
    for entry in reversed(ordered):
        if _tagging(entry):
            name = str(entry.get("value_to"))
            if entry.get("type") == "added":
                have.discard(name)
            else:
                have.add(name)
    return frozenset(have)


def _tagging(entry: Mapping[str, Any]) -> bool:
    """A history entry of a tag added to or removed from the ticket."""
    return (
        entry.get("type") in ("added", "removed")
        and entry.get("object") == "Ticket"
        and entry.get("attribute") == TAG
        and entry.get("value_to") not in (None, "")
    )


def _tagged(have: frozenset[str], entry: Mapping[str, Any]) -> frozenset[str]:
    name = str(entry["value_to"])
    return have | {name} if entry.get("type") == "added" else have - {name}


def _iso_key(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _change(entry: Mapping[str, Any], seq: int, ref: Reference, mapping: ValueMap) -> Event:
    attribute = str(entry["attribute"])
    eid, at = f"h{entry['id']}", instant(entry["created_at"])
    new, old = _name(entry, "to", attribute, ref), _name(entry, "from", attribute, ref)
    name = FIELDS[attribute]
    if name == "status":
        reason = mapping.removal(new)
        if reason is not None:
            return Removed(eid, at, reason, seq=seq)
        was = None if old is None else mapping.status(old)
        return FieldChange(eid, at, name, mapping.status(new), old=was, seq=seq)
    if name == "priority":
        return FieldChange(eid, at, name, mapping.priority(new), old=mapping.priority(old), seq=seq)
    return FieldChange(eid, at, name, new or "", old=old or "", seq=seq)


def _name(entry: Mapping[str, Any], side: str, attribute: Any, ref: Reference) -> str | None:
    """A history value: its name (``value_from``/``value_to``), else its id looked up."""
    value = entry.get(f"value_{side}")
    if value not in (None, ""):
        return str(value)
    ident = entry.get(f"id_{side}")
    if ident is None:
        return None
    if attribute == "state":
        found = ref.states.get(_int(ident))
        return found[0] if found else str(ident)
    table = ref.priorities if attribute == "priority" else ref.groups
    return table.get(_int(ident), str(ident))
