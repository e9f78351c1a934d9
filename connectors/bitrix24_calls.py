"""Missed calls for the ``bitrix24`` connector (HELPDESK-APIS.md, "Bitrix24 REST API" §5):
``voximplant.statistic.get`` walked by ID; the numbers still waiting for a call back are
kept in the cursor (:func:`~connectors.bitrix24_mapping.call_changes`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import TicketChange
from connectors.bitrix24_client import CALLS, Portal, rows
from connectors.bitrix24_mapping import call_changes, portal_filter_time

if TYPE_CHECKING:
    from connectors.bitrix24 import Bitrix24Connector


def calls(
    conn: Bitrix24Connector, portal: Portal, state: dict[str, Any], notes: list[str]
) -> Iterator[list[TicketChange]]:
    """Pages of call statistics as phone tickets, each with its position in ``state``."""
    mine = dict(state.get("calls") or {})
    waiting: dict[str, dict[str, Any]] = dict(mine.get("waiting") or {})
    after = int(mine.get("after") or 0)
    while True:
        where: dict[str, Any] = {">ID": after}
        if not after:
            where[">=CALL_START_DATE"] = portal_filter_time(conn.start)
        params = {"FILTER": where, "SORT": "ID", "ORDER": "ASC", "start": 0}
        answer = portal.call(CALLS, params)
        page = rows(answer["result"], CALLS)
        if page:
            after = max(after, *(int(c["ID"]) for c in page))
        changes = _merged(call_changes(page, waiting, conn.ticket_url("call")))
        state["calls"] = {"after": after, "waiting": waiting}
        yield changes
        if not page or "next" not in answer:
            return


def _merged(changes: Sequence[TicketChange]) -> list[TicketChange]:
    """Changes of one ticket in a page as one (its events together, its latest fields)."""
    out: dict[str, TicketChange] = {}
    for change in changes:
        before = out.get(change.ticket)
        if before is None:
            out[change.ticket] = change
            continue
        out[change.ticket] = TicketChange(
            change.ticket, change.fields, [*before.events, *change.events],
            created_at=before.created_at or change.created_at, updated_at=change.updated_at,
        )  # fmt: skip
    return list(out.values())
