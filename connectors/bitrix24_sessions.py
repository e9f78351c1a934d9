"""Open Lines sessions for the ``bitrix24`` connector (HELPDESK-APIS.md, "Bitrix24 REST
API" §4): ``IMOPENLINES_SESSION`` activities walked by ``LAST_UPDATED``, their histories
read 50 to a ``batch``, every open session re-read each poll (a chat message does not move
``LAST_UPDATED``), and the sessions known open that are gone found deleted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import RetriableError, TicketChange
from connectors.bitrix24_client import HISTORY, LIST, PAGE, SELECT, SESSION, Portal, rows
from connectors.bitrix24_mapping import (
    OVERLAP,
    began_at,
    instant,
    portal_filter_time,
    removed,
    session_change,
)

if TYPE_CHECKING:
    from connectors.bitrix24 import Bitrix24Connector


def sessions(
    conn: Bitrix24Connector, portal: Portal, state: dict[str, Any], notes: list[str]
) -> Iterator[list[TicketChange]]:
    handled: set[str] = set()
    known_open = set(state.get("open") or [])
    still_open: set[str] = set()
    for page, changes, position in _walk(conn, portal, state, notes):
        handled |= {str(a["ID"]) for a in page}
        still_open |= {str(a["ID"]) for a in page if str(a.get("COMPLETED")) != "Y"}
        state["sessions"] = position  # only once the page's changes are in hand
        yield changes
    open_now: list[dict[str, Any]] = []  # every open session, re-read for new messages
    after = 0
    while True:
        params = {"filter": {"PROVIDER_ID": SESSION, "COMPLETED": "N", ">ID": after},
                  "order": {"ID": "ASC"}, "select": SELECT, "start": -1}  # fmt: skip
        page = rows(portal.call(LIST, params)["result"], LIST)
        open_now += page
        if len(page) < PAGE:
            break
        after = max(int(a["ID"]) for a in page)
    still_open |= {str(a["ID"]) for a in open_now}
    stale = [a for a in open_now if str(a["ID"]) not in handled]
    for i in range(0, len(stale), PAGE):
        yield session_changes(conn, portal, stale[i : i + PAGE], notes)
    missing = sorted(known_open - still_open - handled, key=int)
    for i in range(0, len(missing), PAGE):  # reconciliation: closed, or deleted?
        chunk = missing[i : i + PAGE]
        params = {"filter": {"@ID": chunk}, "select": SELECT, "start": -1}
        found = rows(portal.call(LIST, params)["result"], LIST)
        there = {str(a["ID"]) for a in found}
        now = conn._clock()
        changes = session_changes(conn, portal, found, notes)
        yield changes + [removed(aid, now) for aid in chunk if aid not in there]
    state["open"] = sorted(still_open, key=int)


def _walk(
    conn: Bitrix24Connector, portal: Portal, state: dict[str, Any], notes: list[str]
) -> Iterator[tuple[list[dict[str, Any]], list[TicketChange], dict[str, Any]]]:
    """The session activities changed since the last walk began (by ID, ``start=-1``),
    pipelined: each ``batch`` carries 49 histories and the walk's next list page, so a
    backfill costs about one request per 49 sessions. Yields the sessions handled, their
    changes and the position to keep once they are stored (resuming after the last)."""
    mine = state.get("sessions") or {}
    since = mine.get("since") or portal_filter_time(conn.start)
    after, began = int(mine.get("after") or 0), mine.get("began")

    def listing(last: int) -> dict[str, Any]:
        return {"filter": {"PROVIDER_ID": SESSION, ">=LAST_UPDATED": since, ">ID": last},
                "order": {"ID": "ASC"}, "select": SELECT, "start": -1}  # fmt: skip

    answer = portal.call(LIST, listing(after))
    began = began or began_at(answer, conn._clock())
    queue = rows(answer["result"], LIST)
    listed, more = max([after, *(int(a["ID"]) for a in queue)]), len(queue) >= PAGE
    handled = False
    while queue or more:
        handled = True
        take = queue[: PAGE - 1] if more else queue[:PAGE]
        extra = {"next": (LIST, listing(listed))} if more else {}
        changes, results = _changes(conn, portal, take, notes, extra)
        queue = queue[len(take) :]
        if more:
            if not isinstance(results.get("next"), list | dict):
                raise RetriableError("bitrix24: the next page of sessions could not be read")
            page = rows(results["next"], LIST)
            queue += page
            listed, more = max([listed, *(int(a["ID"]) for a in page)]), len(page) >= PAGE
        after = max([after, *(int(a["ID"]) for a in take)])
        if queue or more:
            position = {"since": since, "after": after, "began": began}
        else:
            position = {"since": portal_filter_time(instant(began) - OVERLAP)}
        yield take, changes, position
    if not handled:  # nothing changed: the next walk begins where this one did
        yield [], [], {"since": portal_filter_time(instant(began) - OVERLAP)}


def session_changes(
    conn: Bitrix24Connector, portal: Portal, activities: Sequence[dict[str, Any]], notes: list[str]
) -> list[TicketChange]:
    return _changes(conn, portal, activities, notes, {})[0]


def _changes(
    conn: Bitrix24Connector,
    portal: Portal,
    activities: Sequence[dict[str, Any]],
    notes: list[str],
    extra: dict[str, tuple[str, dict[str, Any]]],
) -> tuple[list[TicketChange], dict[str, Any]]:
    """The sessions' changes, their histories read in one ``batch`` with ``extra``
    commands (whose results come back by key)."""
    wanted = [a for a in activities
              if str(a.get("PROVIDER_ID")) == SESSION
              and conn._watched(str(a.get("PROVIDER_TYPE_ID")))]  # fmt: skip
    commands = {str(a["ID"]): (HISTORY, {"SESSION_ID": str(a.get("ASSOCIATED_ENTITY_ID"))})
                for a in wanted}  # fmt: skip
    histories, failed = conn._run(portal, {**commands, **extra})
    changes = []
    for activity in wanted:
        aid = str(activity["ID"])
        if aid in failed or not isinstance(histories.get(aid), dict):
            notes.append(f"bitrix24: session activity {aid}: its history could not be read"
                         f" ({failed.get(aid, 'no history')}); skipped")  # fmt: skip
            continue
        try:
            changes.append(session_change(activity, histories[aid], conn._line_names,
                                          conn.ticket_url(aid)))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            notes.append(f"bitrix24: session activity {aid} is not as documented"
                         f" ({type(exc).__name__}); skipped")  # fmt: skip
    return changes, {key: histories.get(key) for key in extra}
