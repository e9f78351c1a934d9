"""Help Scout's conversations and threads in slamon's normalized terms (HELPDESK-APIS.md,
"Default mappings to the normalized fields" and "PART B — HELP SCOUT MAILBOX API 2.0").

Pure: a conversation from ``/v2/conversations``, all its threads and the mailbox names go
in; normalized fields and events come out. Event ids are Help Scout's thread ids (the
conversation id for the creation), so the same history read twice gives the same events.

What Help Scout cannot say, and how it is read here:
- No ``new`` status: a conversation starts ``active``, i.e. ``open``.
- No priorities: a tag mapped under ``priorities:`` in the config gives the priority (the
  highest when several do), else ``normal``. Help Scout keeps no history of tags, so the
  priority is the one seen when slamon first reads the conversation; a later change of tags
  changes the ticket's current priority, not its past (no FieldChange).
- Channels: only the conversation ``type`` (email, chat, phone); everything else is other.
- Status changes are read from the threads' ``status`` (``nochange`` when a thread did not
  change it): a lineitem, or a reply/note that also set a status.
- Automations: a thread whose ``action.type`` names a workflow (``manual-workflow`` is
  documented; the rest of the enumeration is not) or an auto-reply is ``system``.
- Satisfaction ratings (connectors/helpscout_ratings.py) need the Plus or Pro plan: Help
  Scout has no documented list of ratings, so the happiness report says which conversations
  were rated and each rating is read from ``/v2/ratings/{id}`` (the report's value key is
  unconfirmed). csat: great 5, okay 3, not_good 1; unknown is no answer. A changed rating is
  a new answer at its ``modifiedAt`` (the latest counts), seen only while its report row is
  still inside the report window the sync reads (an hour back from the last walk).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
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

STATUSES = {"active": "open", "open": "open", "pending": "pending", "closed": "solved"}
REMOVING: dict[str, Removal] = {"spam": "spam"}  # removing statuses (state "deleted" too)
CHANNELS = {"email": "email", "chat": "chat", "phone": "phone"}
RANKS = ("low", "normal", "high", "urgent")
CUSTOMER_TYPES = ("customer", "beaconchat")  # what the customer wrote, whoever typed it
REPLY_TYPES = ("message", "reply", "chat", "phone")  # by createdBy.type: user → agent
INTERNAL_TYPES = ("note", "forwardparent", "forwardchild")  # never seen by the customer
QUIET_TYPES = ("lineitem",)  # no message: status changes, assignments, moves
NO_CHANGE = "nochange"


class ValueMap:
    """Statuses through the defaults and the overrides; priorities from tags mapped in the
    config. An unknown status counts as open and is reported once (:meth:`notes`)."""

    def __init__(self, statuses: Mapping[str, str], priorities: Mapping[str, str]) -> None:
        self.statuses = {**STATUSES, **statuses}
        self.priorities = dict(priorities)
        self._reported: set[tuple[str, str]] = set()
        self._notes: list[str] = []

    def status(self, value: Any) -> str:
        found = self.statuses.get(str(value))
        if found is not None:
            return found
        self.note("status", value, "statuses", "open")
        return "open"

    def priority(self, tags: frozenset[str]) -> str:
        found = [self.priorities[tag] for tag in tags if tag in self.priorities]
        return max(found, key=RANKS.index, default=self.priorities.get("null", "normal"))

    def note(self, kind: str, value: Any, key: str, default: str) -> None:
        if (kind, str(value)) not in self._reported:
            self._reported.add((kind, str(value)))
            where = f"; map it under `{key}:`" if key else ""
            self._notes.append(f"helpscout {kind} {str(value)[:50]!r} counted as {default}{where}")

    def once(self, text: str) -> None:
        """A warning of its own words, handed out once per connector (i.e. per process)."""
        if ("text", text) not in self._reported:
            self._reported.add(("text", text))
            self._notes.append(text)

    def notes(self) -> list[str]:
        """Warnings not yet handed out (each unknown value once per connector)."""
        out, self._notes = self._notes, []
        return out


def instant(value: Any) -> dt.datetime:
    """A Help Scout time (``2012-03-15T22:46:22Z``; the ratings doc omits the Z) in UTC."""
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def iso(when: dt.datetime) -> str:
    """``modifiedSince``'s format, second-granular: ``Y-m-d\\TH:i:s\\Z``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(conversation: Mapping[str, Any]) -> dt.datetime:
    """The latest change the list shows of a conversation. The v2 object has no
    ``modifiedAt``: the latest of its creation, ``userUpdatedAt``, ``closedAt`` and
    ``customerWaitingSince.time`` stands in (never later than the real modification)."""
    times = [conversation["createdAt"]]
    times += [conversation.get(k) for k in ("userUpdatedAt", "closedAt")]
    waiting = conversation.get("customerWaitingSince")
    if isinstance(waiting, dict):
        times.append(waiting.get("time"))
    return max(instant(t) for t in times if t)


def tags_of(conversation: Mapping[str, Any]) -> frozenset[str]:
    tags = conversation.get("tags") or ()
    return frozenset(str(t.get("tag") if isinstance(t, dict) else t) for t in tags)


def removal(conversation: Mapping[str, Any]) -> Removal | None:
    if conversation.get("state") == "deleted":
        return "deleted"
    return REMOVING.get(str(conversation.get("status")))


def fields_of(
    conversation: Mapping[str, Any],
    mailboxes: Mapping[str, str],
    mapping: ValueMap,
    url: str,
) -> dict[str, FieldValue]:
    """The conversation's normalized fields now (a removed one reads as closed)."""
    status = conversation.get("status")
    tags = tags_of(conversation)
    customer = conversation.get("primaryCustomer") or conversation.get("createdBy") or {}
    return {
        "status": "closed" if removal(conversation) else mapping.status(status),
        "priority": mapping.priority(tags),
        "queue": queue(conversation.get("mailboxId"), mailboxes),
        "channel": CHANNELS.get(str(conversation.get("type")), "other"),
        "type": "",
        "tags": tags,
        "subject": str(conversation.get("subject") or ""),
        "requester": str(customer.get("email") or customer.get("id") or ""),
        "url": url,
    }


def queue(mailbox: Any, mailboxes: Mapping[str, str]) -> str:
    if mailbox is None or mailbox == "":
        return ""
    return mailboxes.get(str(mailbox), str(mailbox))


def by_automation(thread: Mapping[str, Any]) -> bool:
    action = thread.get("action")
    kind = str(action.get("type") or "") if isinstance(action, dict) else ""
    return "workflow" in kind or "auto" in kind.replace("-", "")


def _published(thread: Mapping[str, Any]) -> bool:
    """Drafts, hidden and in-review threads are nobody's message yet."""
    return bool(thread.get("state", "published") == "published")


def author_of(thread: Mapping[str, Any]) -> Author:
    if by_automation(thread):
        return "system"
    if thread.get("type") in CUSTOMER_TYPES:
        return "customer"
    creator = thread.get("createdBy")
    kind = creator.get("type") if isinstance(creator, dict) else None
    return "agent" if kind == "user" else "customer"


def history(
    conversation: Mapping[str, Any],
    threads: Sequence[Mapping[str, Any]] | None,
    mailboxes: Mapping[str, str],
    mapping: ValueMap,
    gone: Removal | None = None,
) -> list[Event]:
    """A conversation's events: its creation, then its published threads oldest first
    (``seq`` counts two per thread: its message, then the status it set), and its removal.
    ``threads`` None: they could not be read because the conversation is ``gone``
    ("deleted", or "merged" into another)."""
    cid = str(conversation["id"])
    published = [t for t in threads or () if isinstance(t, dict) and _published(t)]
    published.sort(key=lambda t: (instant(t["createdAt"]), int(t["id"])))
    first = published[0] if published else {}
    status = str(first.get("status") or "active")
    status = "active" if status in (NO_CHANGE, *REMOVING) else status
    created_at = instant(conversation["createdAt"])
    fields: dict[str, FieldValue] = {
        "status": mapping.status(status),
        "priority": mapping.priority(tags_of(conversation)),
        "queue": queue(conversation.get("mailboxId"), mailboxes),
        "channel": CHANNELS.get(str(conversation.get("type")), "other"),
        "type": "",
        "tags": tags_of(conversation),
    }
    by = author_of(first) if first else "customer"
    events: list[Event] = []
    if threads is not None:  # else gone before slamon saw it: its removal is all there is
        events.append(Created(f"{cid}:created", created_at, fields, by=by))
    removed = False
    for n, thread in enumerate(published, start=1):
        tid, at, kind = str(thread["id"]), instant(thread["createdAt"]), thread.get("type")
        if kind in CUSTOMER_TYPES or kind in REPLY_TYPES:
            events.append(Message(tid, at, author_of(thread), public=True, seq=2 * n))
        elif kind in INTERNAL_TYPES:
            events.append(Message(tid, at, author_of(thread), public=False, seq=2 * n))
        elif kind not in QUIET_TYPES:
            mapping.note("thread type", kind, "", "no message")
        value = str(thread.get("status") or NO_CHANGE)
        if value == NO_CHANGE or value == status:
            continue
        if value in REMOVING:
            if not removed:
                events.append(Removed(f"{tid}:status", at, "spam", seq=2 * n + 1))
            removed = True
            continue
        old, status = mapping.status(status), value
        events.append(FieldChange(f"{tid}:status", at, "status", mapping.status(value),
                                  old=old, seq=2 * n + 1))  # fmt: skip
    gone = gone or removal(conversation)
    if gone and not removed:
        last = max([stamp(conversation), *(e.at for e in events)])
        events.append(Removed(f"{cid}:{gone}", last, gone, seq=2 * len(published) + 2))
    return events
