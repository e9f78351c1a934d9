"""CRM e-mail for the ``bitrix24`` connector (HELPDESK-APIS.md, "Bitrix24 REST API" §5):
``CRM_EMAIL`` activities walked by ``LAST_UPDATED`` like the sessions, each changed mail's
thread re-read whole from its CRM owner and threaded by subject
(:func:`~connectors.bitrix24_mapping.email_threads`).

Reconciliation: the cursor keeps the open threads (``mail_open``: ticket → owner and
subject; bounded by the threads waiting for an answer). A thread whose first mail is gone
from the CRM was deleted: its ticket is removed, and what is left of it on that subject, if
anything, is read again as the thread it now is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import TicketChange
from connectors.bitrix24_client import EMAIL, LIST, PAGE, Portal, rows
from connectors.bitrix24_mapping import email_change, email_threads, removed, thread_subject

if TYPE_CHECKING:
    from connectors.bitrix24 import Bitrix24Connector

Threads = dict[str, list[str]]  # ticket -> [owner key, thread subject]


def mails(
    conn: Bitrix24Connector, portal: Portal, state: dict[str, Any], notes: list[str]
) -> Iterator[list[TicketChange]]:
    """Pages of changed threads, then the open threads found deleted."""
    tracked: Threads = dict(state.get("mail_open") or {})
    reread: set[str] = set()
    for page, position in conn._walk(portal, state, "mail", {"PROVIDER_ID": EMAIL}):
        changes = mail_changes(conn, portal, page, notes, tracked)
        reread |= {c.ticket for c in changes}
        state["mail"], state["mail_open"] = position, dict(tracked)
        yield changes
    unseen = sorted((t for t in tracked if t not in reread), key=lambda t: int(t[4:]))
    for i in range(0, len(unseen), PAGE):
        chunk = unseen[i : i + PAGE]
        changes = _reconciled(conn, portal, chunk, tracked, notes)
        state["mail_open"] = dict(tracked)
        if changes:
            yield changes


def mail_changes(
    conn: Bitrix24Connector,
    portal: Portal,
    page: Sequence[dict[str, Any]],
    notes: list[str],
    tracked: Threads | None = None,
) -> list[TicketChange]:
    """The threads these mails belong to, each re-read whole from its CRM owner.
    ``tracked`` (the open threads) is updated in place."""
    page = [a for a in page if str(a.get("PROVIDER_ID")) == EMAIL]
    owners = {(str(a.get("OWNER_TYPE_ID")), str(a.get("OWNER_ID"))) for a in page}
    changed = {str(a["ID"]) for a in page}
    threads, _ = _owner_threads(conn, portal, owners, notes)
    changes = []
    for owner, thread in threads:
        if changed & {str(m["ID"]) for m in thread}:
            changes.append(_thread_change(conn, owner, thread, tracked))
    return changes


def _owner_threads(
    conn: Bitrix24Connector, portal: Portal, owners: set[tuple[str, str]], notes: list[str]
) -> tuple[list[tuple[str, list[Any]]], set[str]]:
    """Every thread of these CRM owners, with its owner's key; and the owners that could
    not be read."""
    commands = {
        f"{t}_{o}": (LIST, {"filter": {"PROVIDER_ID": EMAIL, "OWNER_TYPE_ID": t,
                                       "OWNER_ID": o},
                            "order": {"ID": "ASC"}, "select": ["*", "COMMUNICATIONS"]})
        for t, o in sorted(owners)
    }  # fmt: skip
    found, failed = conn._run(portal, commands)
    out = []
    for key, result in found.items():
        found_mails = rows(result, LIST)
        if len(found_mails) >= PAGE:  # an owner with many mails: read them all
            found_mails = [m for p in portal.pages(LIST, commands[key][1]) for m in p]
        out += [(key, list(thread)) for thread in email_threads(found_mails)]
    notes += [f"bitrix24: the mails of CRM owner {k} could not be read" for k in failed]
    return out, set(failed)


def _thread_change(
    conn: Bitrix24Connector, owner: str, thread: list[Any], tracked: Threads | None
) -> TicketChange:
    ticket = f"mail{thread[0]['ID']}"
    change = email_change(thread, conn.ticket_url(ticket))
    if tracked is not None:
        if change.fields.get("status") == "open":
            tracked[ticket] = [owner, thread_subject(thread[0].get("SUBJECT"))]
        else:
            tracked.pop(ticket, None)
    return change


def _reconciled(
    conn: Bitrix24Connector,
    portal: Portal,
    tickets: list[str],
    tracked: Threads,
    notes: list[str],
) -> list[TicketChange]:
    """Of these open threads, the ones whose first mail is gone: removed, and the rest of
    the thread (if any mail of it is left) read again under its new first mail."""
    params = {"filter": {"@ID": [t[4:] for t in tickets]}, "select": ["ID"], "start": -1}
    there = {str(a.get("ID")) for a in rows(portal.call(LIST, params)["result"], LIST)}
    gone = [t for t in tickets if t[4:] not in there]
    if not gone:
        return []
    owners = {(o.partition("_")[0], o.partition("_")[2]) for o, _ in (tracked[t] for t in gone)}
    threads, failed = _owner_threads(conn, portal, owners, notes)
    now = conn._clock()
    changes = []
    for ticket in gone:
        owner, subject = tracked[ticket]
        if owner in failed:
            continue  # tried again next time
        del tracked[ticket]
        changes.append(removed(ticket, now))
        for key, thread in threads:
            if key == owner and thread_subject(thread[0].get("SUBJECT")) == subject:
                changes.append(_thread_change(conn, key, thread, tracked))
    return changes
