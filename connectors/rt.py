"""The ``rt`` connector: Request Tracker 5's REST2 ticket search on ``LastUpdated``, each
changed ticket's transaction history (HELPDESK-APIS.md, "Request Tracker 5";
REAL-COMPONENTS.md §4 for the API as a real RT 5.0.3 answers it).

Changes are found with ``GET /REST/2.0/tickets`` and the TicketSQL
``LastUpdated >= 'YYYY-MM-DD HH:MM:SS UTC'`` (the zone spelled out, so RT's own ``$Timezone``
or the user's does not shift it; an ISO value ending in ``Z`` would match the whole day),
ordered by ``LastUpdated`` then ``id``. RT's times are to the second (and a real RT 5.0.3
also answers ``>=`` with tickets from the second before), so the query is inclusive, anything
older than the mark is dropped, and the cursor keeps, beside the mark, the tickets already
delivered at that second with their ``LastUpdated`` (``seen``): those are skipped before
anything is fetched for them. The mark never passes the second before the search ran (a
transaction may still land in the current second), so tickets changed in it are read again
by the next poll. Offset pages would shift under a walk ordered by ``LastUpdated`` (a ticket
updated meanwhile jumps to the end), so every request asks from the newest mark, page 1; only
a page that does not move the mark goes on to page 2, 3, ... of the same query.

RT's searches never return a deleted ticket, so once the walk has caught up, the Status
transactions to ``deleted`` since the cursor's ``deleted_since`` are looked up
(``/REST/2.0/transactions``) and each becomes a Removed event.

Each search page becomes one Batch: every fresh ticket gets its whole history
(``/ticket/{id}/history``, paged) and the mail headers of its creation (the channel) and of
the mails RT sent (an ``Auto-Submitted: auto-replied`` one is the auto-reply, a system
message); the creators' ``Privileged`` flags and the queues' names are looked up. Only then
is the Batch handed on with its cursor, so a failure anywhere on a page leaves the stored
cursor before it and the next poll reads it again.

Options: ``url``, ``token`` (sent as ``Authorization: token ...``) or ``username`` +
``password`` (HTTP basic), ``queues`` (names; default all), ``start``,
``statuses``/``priorities`` overrides.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from connectors.base import (
    Batch,
    Connector,
    Cursor,
    FatalError,
    RetriableError,
    TicketChange,
    register,
    start_of,
    utc_now,
)
from connectors.http import Http, server_time
from connectors.rt_mapping import (
    Directory,
    ValueMap,
    headers_of,
    history,
    instant,
    needs_headers,
    ref_id,
    ticket_fields,
    user_name,
)
from rules.events import FieldValue, Removed

API = "/REST/2.0"
SEARCH = f"{API}/tickets"
TICKET_FIELDS = "Subject,Status,Created,LastUpdated,Queue,Requestor,Priority"
HISTORY_FIELDS = "Type,Created,Creator,Field,OldValue,NewValue"
PER_PAGE = 50  # tickets per search page: each costs a history request or more
HISTORY_PAGE = 100
# A search that names no Status leaves deleted tickets out; these bring them in too.
EVERY_STATUS = "(Status = '__Active__' OR Status = '__Inactive__' OR Status = 'deleted')"


@register
class RtConnector(Connector):
    """Request Tracker 5; see the module's docstring."""

    type = "rt"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        per_page: int = PER_PAGE,
    ) -> None:
        super().__init__(name, options)
        url = options.get("url")
        if not url:
            raise FatalError("rt: give url")
        self.base = str(url).rstrip("/")
        token, username, password = (options.get(k) for k in ("token", "username", "password"))
        self._headers: dict[str, str] = {}
        self._auth: tuple[str, str] | None = None
        if token:
            self._headers["Authorization"] = f"token {token}"
            self._secrets = [str(token)]
        elif username and password:
            self._auth = (str(username), str(password))
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._secrets = [str(password), basic]
        else:
            raise FatalError("rt: give token, or username + password")
        self._clock = clock
        self.start = start_of(options, "rt", clock())
        self.queues = [str(q) for q in options.get("queues") or ()]
        self.mapping = ValueMap(options.get("statuses") or {}, options.get("priorities") or {})
        self.per_page = per_page
        # Looked up once per connector: users' Privileged flags, queue names, and the two
        # headers that matter of the transactions that need them (transactions never change).
        self._directory = Directory()

    def ticket_url(self, ticket: str) -> str:
        return f"{self.base}/Ticket/Display.html?id={ticket}"

    # -- sync ----------------------------------------------------------------------------

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = Http(
            "rt", self.base, stop, headers=self._headers, auth=self._auth, secrets=self._secrets
        )
        mark, seen = self._position(cursor)
        deleted = str((cursor or {}).get("deleted_since") or _stamp(mark))
        page = 1
        while True:
            items, pages, server_now = self._search(http, mark, page)
            fresh = [
                t
                for t in items
                if instant(t["LastUpdated"]) >= mark and seen.get(str(t["id"])) != t["LastUpdated"]
            ]
            changes = [self._change(http, t) for t in fresh]
            # The mark never passes the second before the search ran: a transaction may
            # still land in the current second, so tickets changed in it are read again.
            settled = server_now.replace(microsecond=0) - dt.timedelta(seconds=1)
            top = max((instant(t["LastUpdated"]) for t in items), default=mark)
            advanced = min(top, settled) > mark
            if advanced:
                mark, seen = min(top, settled), {}
            for t in items:
                if instant(t["LastUpdated"]) == mark:
                    seen[str(t["id"])] = t["LastUpdated"]
            done = len(items) < self.per_page or page >= pages
            # From the new mark, page 1; a whole page at the mark goes on to the next page.
            page = 1 if advanced else page + 1
            newest = server_now if done else top
            position = {"since": _stamp(mark), "seen": dict(seen), "deleted_since": deleted}
            if done:  # caught up: the deletions since the last look (search hides them)
                removed, after = self._deletions(http, instant(deleted), settled)
                changes += removed
                position["deleted_since"] = _stamp(after)
            yield Batch(changes, position, newest=newest, done=done, notes=self.mapping.notes())
            if done or stop.is_set():
                return

    def _deletions(
        self, http: Http, since: dt.datetime, settled: dt.datetime
    ) -> tuple[list[TicketChange], dt.datetime]:
        """Tickets deleted since ``since``: RT's searches never return a deleted ticket, so
        their Status transactions to ``deleted`` are looked up instead (read again from
        the last one's second; the monitor drops events it has by id)."""
        query = (
            "ObjectType = 'RT::Ticket' AND Type = 'Status' AND NewValue = 'deleted' "
            f"AND Created >= '{since:%Y-%m-%d %H:%M:%S} UTC'"
        )
        path, page, changes, latest = f"{API}/transactions", 1, [], since
        while True:
            params = {"query": query, "fields": "Created,ObjectId", "orderby": "id",
                      "order": "ASC", "per_page": HISTORY_PAGE, "page": page}  # fmt: skip
            body = http.decode(http.request("GET", path, params=params), path)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RetriableError(f"rt: {path} answered without a transaction list")
            for tx in items:
                try:
                    tid, at = str(int(tx["ObjectId"])), instant(tx["Created"])
                    seq = 2 * int(tx["id"])
                except (KeyError, TypeError, ValueError):
                    raise RetriableError(
                        f"rt: {path} gave a transaction not as documented"
                    ) from None
                latest = max(latest, min(at, settled))
                if at < since or not self._watched(http, tid):
                    continue
                fields: dict[str, FieldValue] = {"status": "closed", "url": self.ticket_url(tid)}
                removal = Removed(str(tx["id"]), at, "deleted", seq=seq)
                changes.append(TicketChange(tid, fields, (removal,), updated_at=at))
            if len(items) < HISTORY_PAGE:
                return changes, latest
            page += 1

    def _watched(self, http: Http, tid: str) -> bool:
        """A ticket in one of the configured queues (all, when none are)."""
        if not self.queues:
            return True
        answer = http.request("GET", f"{API}/ticket/{quote(tid)}")
        body = http.decode(answer, "/ticket") if answer.status_code != 404 else {}
        qid = ref_id(body.get("Queue")) if isinstance(body, dict) else ""
        if qid and qid not in self._directory.queues:
            self._learn(http, {"Queue": body.get("Queue")}, [])
        return self._directory.queue(qid) in self.queues

    def _position(self, cursor: Cursor | None) -> tuple[dt.datetime, dict[str, str]]:
        since = (cursor or {}).get("since")
        if isinstance(since, str) and since:
            try:
                mark = instant(since)
            except ValueError:
                raise RetriableError("rt: the stored cursor is not readable") from None
            seen = (cursor or {}).get("seen")
            return mark, {str(k): str(v) for k, v in (seen or {}).items()}
        return self.start.astimezone(dt.UTC).replace(microsecond=0), {}

    def _query(self, mark: dt.datetime) -> str:
        query = f"LastUpdated >= '{mark:%Y-%m-%d %H:%M:%S} UTC' AND {EVERY_STATUS}"
        if self.queues:
            names = " OR ".join(f"Queue = '{_quoted(q)}'" for q in self.queues)
            query += f" AND ({names})"
        return query

    def _search(
        self, http: Http, mark: dt.datetime, page: int
    ) -> tuple[list[dict[str, Any]], int, dt.datetime]:
        params = {
            "query": self._query(mark),
            "fields": TICKET_FIELDS,
            "orderby": ["LastUpdated", "id"],
            "order": ["ASC", "ASC"],
            "per_page": self.per_page,
            "page": page,
        }
        response = http.request("GET", SEARCH, params=params)
        body = http.decode(response, SEARCH)
        if response.status_code == 404 or not isinstance(body, dict):
            raise RetriableError(f"rt: {SEARCH} answered without a ticket list")
        items = body.get("items")
        if not isinstance(items, list):
            raise RetriableError(f"rt: {SEARCH} answered without a ticket list")
        tickets = [t for t in items if _ticket(t)]
        if len(tickets) != len(items):
            raise RetriableError(f"rt: {SEARCH} gave tickets without id or LastUpdated")
        try:
            pages = int(float(body.get("pages") or 0))
        except (TypeError, ValueError):
            pages = 0
        return tickets, pages, server_time(response) or self._clock()

    def _change(self, http: Http, ticket: dict[str, Any]) -> TicketChange:
        tid = str(ticket["id"])
        transactions = self._history(http, tid)
        if transactions is None:  # gone from RT altogether (shredded)
            gone: dict[str, FieldValue] = {"status": "closed", "url": self.ticket_url(tid)}
            return TicketChange(tid, gone, (), updated_at=instant(ticket["LastUpdated"]))
        try:
            self._learn(http, ticket, transactions)
            url = self.ticket_url(tid)
            fields = ticket_fields(ticket, transactions, self._directory, self.mapping, url)
            events = history(ticket, transactions, self._directory, self.mapping)
            created = instant(ticket["Created"]) if ticket.get("Created") else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetriableError(
                f"rt: ticket {tid} or its history is not as documented ({type(exc).__name__})"
            ) from None
        return TicketChange(
            tid,
            fields,
            events,
            created_at=created,
            updated_at=max((e.at for e in events), default=instant(ticket["LastUpdated"])),
        )

    def _history(self, http: Http, tid: str) -> list[dict[str, Any]] | None:
        """Every transaction of a ticket, page by page; None when the ticket is gone."""
        path = f"{API}/ticket/{quote(tid)}/history"
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"fields": HISTORY_FIELDS, "per_page": HISTORY_PAGE, "page": page}
            response = http.request("GET", path, params=params)
            if response.status_code == 404:
                if _from_rt(response):
                    return None
                # Not RT's own JSON 404: a proxy in front of it lost its way; try again.
                raise RetriableError(f"rt: {path} answered HTTP 404 that RT did not write")
            body = http.decode(response, path)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RetriableError(f"rt: {path} answered without a transaction list")
            found += [t for t in items if isinstance(t, dict) and t.get("id") and t.get("Type")]
            try:
                pages = int(float(body.get("pages") or 0))
            except (TypeError, ValueError):
                pages = 0
            if page >= pages or len(items) < HISTORY_PAGE:
                return found
            page += 1

    def _learn(
        self, http: Http, ticket: Mapping[str, Any], transactions: list[dict[str, Any]]
    ) -> None:
        """Look up what the history needs and the directory does not know yet."""
        directory = self._directory
        for name in {user_name(t.get("Creator")) for t in transactions} - {""}:
            if name not in directory.privileged:
                user = http.request("GET", f"{API}/user/{quote(name, safe='')}")
                body = http.decode(user, "/user") if user.status_code != 404 else {}
                flag = body.get("Privileged") if isinstance(body, dict) else None
                directory.privileged[name] = str(flag) == "1"  # unknown: a customer
        queues = {ref_id(ticket.get("Queue"))}
        queues |= {
            str(t.get(k) or "")
            for t in transactions
            if t.get("Type") == "Set" and t.get("Field") == "Queue"
            for k in ("OldValue", "NewValue")
        }
        for qid in queues - {"", "0"} - directory.queues.keys():
            answer = http.request("GET", f"{API}/queue/{quote(qid, safe='')}")
            body = http.decode(answer, "/queue") if answer.status_code != 404 else {}
            named = body.get("Name") if isinstance(body, dict) else None
            directory.queues[qid] = str(named or qid)
        for txid in needs_headers(transactions):
            if txid in directory.headers:
                continue
            path = f"{API}/transaction/{quote(txid)}/attachments"
            answer = http.request("GET", path, params={"fields": "Headers"})
            body = http.decode(answer, path) if answer.status_code != 404 else {}
            items = body.get("items") if isinstance(body, dict) else None
            first = items[0] if isinstance(items, list) and items else {}
            raw = headers_of(first.get("Headers") if isinstance(first, dict) else "")
            keep = ("x-rt-interface", "auto-submitted")
            directory.headers[txid] = {k: v for k, v in raw.items() if k in keep}


def _ticket(item: Any) -> bool:
    return isinstance(item, dict) and bool(item.get("id")) and bool(item.get("LastUpdated"))


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_rt(response: Any) -> bool:
    """An answer RT wrote: REST2 answers in JSON, with a ``message`` on errors."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "message" in body
