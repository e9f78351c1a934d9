"""Bitrix24's Open Lines sessions, CRM e-mails and calls in slamon's normalized terms
(HELPDESK-APIS.md, "Bitrix24 REST API" §4-§5 and §8).

Pure: activities, session histories and call rows go in; ticket changes come out. Event ids
are Bitrix24's own (activity, message and call ids), so the same data read twice gives the
same events. Times carry the portal's offset and come out in UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connectors.base import TicketChange
from connectors.mail import normalize_subject
from rules.events import Created, Event, FieldChange, FieldValue, Message, Rating, Removed

CHAT = {"livechat", "network"}
SOCIAL = {"fbinstagram", "viber", "wechat", "facebook", "facebookcomments", "fbinstagramdirect",
          "imessage", "olx", "whatsappbyedna", "whatsappbytwilio", "vkgroup", "ok", "avito",
          "telegrambot", "facebookmessenger", "vkgrouporder", "telegram"}  # fmt: skip
MAIL_QUEUE, CALLS_QUEUE = "CRM e-mail", "Calls"  # the queues of the tickets no Open Line holds
VOTES = {"like": 5, "dislike": 1}
MISSED, CONNECTED = "304", "200"
INCOMING_CALLS = ("2", "3")


def instant(value: Any) -> dt.datetime:
    """A Bitrix24 time (ISO 8601 with the portal's offset) in UTC."""
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


OVERLAP = dt.timedelta(seconds=60)  # LAST_UPDATED has whole seconds; clocks drift


def began_at(answer: Mapping[str, Any], fallback: dt.datetime) -> str:
    """When the portal began answering (its own clock, ``time.date_start``)."""
    timing = answer.get("time")
    start = timing.get("date_start") if isinstance(timing, dict) else None
    try:
        return portal_filter_time(instant(start)) if start else portal_filter_time(fallback)
    except ValueError:
        return portal_filter_time(fallback)


def portal_filter_time(when: dt.datetime) -> str:
    """An instant for a filter: always with an offset (a naive one is read in the server's
    zone)."""
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def channel(connector_id: str) -> str:
    if connector_id in CHAT:
        return "chat"
    if connector_id in SOCIAL or connector_id.startswith(("whatsapp", "telegram", "vk", "fb")):
        return "social"
    return "other"


def connector_of(activity: Mapping[str, Any]) -> str:
    source = activity.get("RESULT_SOURCE_ID")
    if source:
        return str(source)
    params = activity.get("PROVIDER_PARAMS")
    code = params.get("USER_CODE") if isinstance(params, dict) else None
    return str(code).split("|", 1)[0] if code else ""


def _by_id(value: Any) -> dict[str, Any]:
    """An ID-keyed map; an empty one comes as ``[]``."""
    return value if isinstance(value, dict) else {}


def author(sender: str, users: Mapping[str, Any]) -> str:
    """senderid 0 is the system; a connector user the client; a bot is the system (its
    answer is no first response); anyone else an operator."""
    if sender in ("0", ""):
        return "system"
    user = users.get(sender)
    user = user if isinstance(user, dict) else {}
    if user.get("connector") in (True, "Y", "true"):
        return "customer"
    if user.get("bot") in (True, "Y", "true"):
        return "system"
    return "agent"


def _vote(params: Any) -> int | None:
    """The client's like/dislike from a vote message (``IMOL_VOTE``, or camel-cased)."""
    if not isinstance(params, dict):
        return None
    value = params.get("IMOL_VOTE", params.get("imolVote"))
    return VOTES.get(str(value).lower()) if value is not None else None


def session_change(
    activity: Mapping[str, Any], history: Mapping[str, Any], lines: Mapping[str, str], url: str
) -> TicketChange:
    """An Open Lines session as a ticket: created at START_TIME by the client (by an
    operator for an outgoing session), its messages, solved at END_TIME once COMPLETED,
    the client's vote as csat."""
    aid = str(activity["ID"])
    start = instant(activity["START_TIME"])
    users = _by_id(history.get("users"))
    line = str(activity.get("PROVIDER_TYPE_ID") or "")
    fields: dict[str, FieldValue] = {
        "status": "open", "priority": "normal", "queue": lines.get(line, line),
        "channel": channel(connector_of(activity)), "type": "", "tags": frozenset(),
        "organization": "", "subject": str(activity.get("SUBJECT") or ""), "url": url,
    }  # fmt: skip
    outgoing = str(activity.get("DIRECTION")) == "2"
    events: list[Event] = [
        Created(f"{aid}:created", start, dict(fields), by="agent" if outgoing else "customer")
    ]
    requester = ""
    messages = sorted(_by_id(history.get("message")).values(),
                      key=lambda m: (instant(m["date"]), int(m["id"])))  # fmt: skip
    for seq, message in enumerate(messages, start=1):
        sender, at = str(message.get("senderid") or "0"), instant(message["date"])
        score = _vote(message.get("params"))
        if score is not None:  # the client's answer to the rating request
            events.append(Rating(f"{aid}:vote:{message['id']}:{score}", at, "csat", score, seq=seq))
            continue
        who = author(sender, users)
        if who == "customer" and not requester:
            user = users.get(sender) or {}
            requester = str(user.get("name") or sender) if isinstance(user, dict) else sender
        events.append(Message(f"{aid}:m{message['id']}", at, who, seq=seq))  # type: ignore[arg-type]
    if str(activity.get("COMPLETED")) == "Y":
        end = instant(activity.get("END_TIME") or activity["LAST_UPDATED"])
        events.append(FieldChange(f"{aid}:closed", end, "status", "solved", seq=len(messages) + 1))
        fields["status"] = "solved"
    fields["requester"] = requester
    newest = max(e.at for e in events)
    return TicketChange(aid, fields, events, created_at=start, updated_at=newest)


def removed(ticket: str, at: dt.datetime) -> TicketChange:
    """A ticket whose activity is gone (deleted in the CRM)."""
    fields: dict[str, FieldValue] = {"status": "closed"}
    return TicketChange(ticket, fields, [Removed(f"{ticket}:deleted", at, "deleted")])


# -- CRM e-mail ----------------------------------------------------------------------------


def thread_subject(subject: Any) -> str:
    return normalize_subject(str(subject or ""))


def email_threads(mails: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """One CRM owner's mails as threads: by subject without Re:/Fwd:/На: prefixes, in time
    order; an incoming mail on a subject not seen starts a thread, an outgoing one joins
    the thread of its subject (or starts an outbound one)."""
    threads: dict[str, list[Mapping[str, Any]]] = {}
    for mail in sorted(mails, key=lambda m: (instant(m["START_TIME"]), int(m["ID"]))):
        threads.setdefault(thread_subject(mail.get("SUBJECT")), []).append(mail)
    return list(threads.values())


def email_change(thread: Sequence[Mapping[str, Any]], url: str) -> TicketChange:
    """A thread as a ticket named after its first mail: incoming mails are the customer's,
    outgoing ones the agent's; it is solved while every incoming mail is completed, and
    open again when a new one comes."""
    first = thread[0]
    tid = f"mail{first['ID']}"
    fields: dict[str, FieldValue] = {
        "status": "open", "priority": "normal", "queue": MAIL_QUEUE, "channel": "email", "type": "",
        "tags": frozenset(), "organization": "", "subject": str(first.get("SUBJECT") or ""),
        "url": url, "requester": _address(first),
    }  # fmt: skip
    start = instant(first["START_TIME"])
    by = "customer" if str(first.get("DIRECTION")) == "1" else "agent"
    events: list[Event] = [Created(f"{tid}:created", start, dict(fields), by=by)]  # type: ignore[arg-type]
    status = "open"
    for seq, mail in enumerate(thread, start=1):
        at, incoming = instant(mail["START_TIME"]), str(mail.get("DIRECTION")) == "1"
        events.append(
            Message(f"mail{mail['ID']}", at, "customer" if incoming else "agent", seq=seq)
        )
        if incoming and status == "solved":
            events.append(FieldChange(f"mail{mail['ID']}:open", at, "status", "open", seq=seq))
            status = "open"
        waiting = [m for m in thread if str(m.get("DIRECTION")) == "1"
                   and instant(m["START_TIME"]) <= at]  # fmt: skip
        answered = all(str(m.get("COMPLETED")) == "Y" for m in waiting)
        if not incoming and answered and status == "open":
            events.append(FieldChange(f"mail{mail['ID']}:solved", at, "status", "solved", seq=seq))
            status = "solved"
    fields["status"] = status
    return TicketChange(tid, fields, events, created_at=start, updated_at=max(e.at for e in events))


def _address(mail: Mapping[str, Any]) -> str:
    for item in mail.get("COMMUNICATIONS") or ():
        if isinstance(item, dict) and item.get("VALUE"):
            return str(item["VALUE"])
    return ""


# -- missed calls --------------------------------------------------------------------------


def digits(number: Any) -> str:
    return re.sub(r"\D", "", str(number or ""))


def call_changes(
    calls: Iterable[Mapping[str, Any]], waiting: dict[str, dict[str, Any]], url: str
) -> list[TicketChange]:
    """Missed calls as phone tickets, one per number until it is called back: a missed
    incoming call (CALL_TYPE 2/3, CALL_FAILED_CODE 304) opens or joins the number's ticket,
    the first later connected call (200) with that number answers and solves it.
    ``waiting`` (by digits: the ticket id and its first call's time) is updated in place;
    the cursor keeps it."""
    changes: list[TicketChange] = []
    for call in sorted(calls, key=lambda c: (instant(c["CALL_START_DATE"]), int(c["ID"]))):
        number, at = digits(call.get("PHONE_NUMBER")), instant(call["CALL_START_DATE"])
        code, kind, cid = str(call.get("CALL_FAILED_CODE")), str(call.get("CALL_TYPE")), call["ID"]
        if not number:
            continue
        open_ticket = waiting.get(number)
        if code == MISSED and kind in INCOMING_CALLS:
            if open_ticket is None:
                open_ticket = waiting[number] = {"ticket": f"call{cid}", "since": at.isoformat()}
                fields = _phone_fields(number, "open", url)
                events: list[Event] = [Created(f"call{cid}:created", at, dict(fields))]
            else:
                fields, events = _phone_fields(number, "open", url), []
            events.append(Message(f"call{cid}", at, "customer", seq=1))
            changes.append(TicketChange(open_ticket["ticket"], fields, events,
                                        created_at=dt.datetime.fromisoformat(open_ticket["since"]),
                                        updated_at=at))  # fmt: skip
        elif code == CONNECTED and open_ticket is not None:
            del waiting[number]
            events = [Message(f"call{cid}", at, "agent", seq=1),
                      FieldChange(f"call{cid}:solved", at, "status", "solved", seq=2)]  # fmt: skip
            changes.append(TicketChange(open_ticket["ticket"], _phone_fields(number, "solved", url),
                                        events, updated_at=at))  # fmt: skip
    return changes


def _phone_fields(number: str, status: str, url: str) -> dict[str, FieldValue]:
    return {"status": status, "priority": "normal", "queue": CALLS_QUEUE, "channel": "phone",
            "type": "", "tags": frozenset(), "organization": "", "requester": f"+{number}",
            "subject": f"Missed call from +{number}", "url": url}  # fmt: skip
