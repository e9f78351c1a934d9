"""The ``zammad`` connector: Zammad's condition search on ``ticket.updated_at``, each changed
ticket's articles and history, and webhook signatures (HELPDESK-APIS.md, "B. Zammad (REST
API v1)").

Changes are found with ``POST /api/v1/tickets/search`` and a ``condition`` of
``ticket.updated_at`` ``after (absolute)`` a mark, ``sort_by=updated_at`` ascending and no
``query`` (so the SQL path runs: Elasticsearch-free, inclusive, no index lag; B2, B9 1/8).
Offset pages would shift under a walk ordered by ``updated_at`` (a ticket updated meanwhile
jumps to the end and the one after it is skipped), so the walk is by key: every request asks
from the newest ``updated_at`` delivered so far, page 1; only a full page of tickets that all
share that instant goes on to page 2, 3, ... of the same query. A first sync starts at the
configured ``start``; a later one at the stored mark less :data:`OVERLAP` (late commits).
Tickets already delivered with the same ``updated_at`` (the cursor's ``seen``) are skipped
before anything is fetched for them, so the overlap costs one search page.

Both search answers are read (B2): the 5.x ``{"tickets": [ids], "tickets_count", "assets"}``
and the newer plain array (or ``{"records": [...]}``). Each search page becomes one Batch:
every fresh ticket gets its articles (``/ticket_articles/by_ticket``) and history
(``/ticket_history``) fetched first; a failure anywhere on a page ends the sync before its
Batch, so the stored cursor stays before the page and the next poll reads it again.

Options: ``url`` (the site, ``/api/v1`` optional), ``token``, ``start``,
``statuses``/``priorities`` overrides (by state name or state type name, by priority name),
``webhook_secret`` (the trigger's webhook signature token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from connectors.base import (
    Batch,
    Connector,
    Cursor,
    FatalError,
    RetriableError,
    TicketChange,
    aware,
    header,
    numeric_id,
    register,
    utc_now,
)
from connectors.http import Http
from connectors.zammad_mapping import (
    STATE_TYPES,
    Reference,
    ValueMap,
    history,
    instant,
    ticket_fields,
)

API = "/api/v1"
SEARCH = f"{API}/tickets/search"
PER_PAGE = 100  # tickets per search page (the search allows 200): each costs 2 requests
MAX_PER_PAGE = 200
INDEX_PAGE = 100  # CanPaginate's default for the reference lists
OVERLAP = dt.timedelta(minutes=5)
START_BACK = dt.timedelta(days=30)
SIGNATURE = "X-Hub-Signature"


@register
class ZammadConnector(Connector):
    """Zammad; see the module's docstring."""

    type = "zammad"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        per_page: int = PER_PAGE,
    ) -> None:
        super().__init__(name, options)
        url = str(options.get("url") or "").rstrip("/").removesuffix(API)
        if not url:
            raise FatalError("zammad: give url")
        token = options.get("token")
        if not token:
            raise FatalError("zammad: give token")
        self.base = url
        self._token = str(token)
        self._clock = clock
        start = options.get("start")
        self.start = aware(start, "zammad: start") if start is not None else clock() - START_BACK
        self.mapping = ValueMap(options.get("statuses") or {}, options.get("priorities") or {})
        secret = options.get("webhook_secret")
        self.webhook_secret = str(secret) if secret else None
        self.per_page = max(1, min(per_page, MAX_PER_PAGE))
        self.ref = Reference()

    def ticket_url(self, ticket: str) -> str:
        return f"{self.base}/#ticket/zoom/{ticket}"

    # -- sync ----------------------------------------------------------------------------

    def _http(self, stop: threading.Event) -> Http:
        headers = {"Authorization": f"Token token={self._token}"}
        return Http("zammad", self.base, stop, headers=headers, secrets=[self._token])

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = self._http(stop)
        since, seen = _position(cursor)
        mark = since - OVERLAP if since is not None else self.start
        page, previous, read = 1, None, False
        while True:
            tickets = self._search(http, mark, page)
            full = len(tickets) >= self.per_page
            fresh = list({int(t["id"]): t for t in tickets
                          if seen.get(str(t["id"])) != t["updated_at"]}.values())  # fmt: skip
            if fresh and not read:  # reference data once per sync, when first needed
                self._read_reference(http)
                read = True
            found = {t["id"]: (self._articles(http, t), self._history(http, t)) for t in fresh}
            changes = [self._change(t, *found[t["id"]]) for t in fresh]
            newest = max((instant(t["updated_at"]) for t in tickets), default=None)
            for ticket in fresh:
                seen[str(ticket["id"])] = ticket["updated_at"]
            if newest is not None and (since is None or newest > since):
                since = newest
            if since is not None:
                seen = {k: v for k, v in seen.items() if instant(v) >= since - OVERLAP}
            position: Cursor = {"since": _iso(since), "seen": dict(seen)} if since else {}
            notes = self.mapping.notes()
            ids = [t["id"] for t in tickets]
            stuck = page > 1 and ids == previous  # the next page of a query repeated the last
            if stuck:
                notes.append("zammad: the search repeated a page; resuming next poll")
            done = not full or stuck
            yield Batch(
                changes,
                position or dict(cursor or {}),
                newest=self._clock() if done else newest,
                done=done,
                notes=tuple(notes),
            )
            if done or stop.is_set():
                return
            if newest is not None and newest > mark:
                mark, page = newest, 1
            else:  # a full page at one instant: the next page of the same query
                page += 1
            previous = ids

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        """Tickets a webhook named, each read at once with its articles and history; one
        gone meanwhile is left to the next sync."""
        http = self._http(stop)
        self._read_reference(http)
        for tid in tickets:
            ticket = _json_or_none(http, f"{API}/tickets/{int(tid)}")
            if ticket is None:
                continue
            if not isinstance(ticket, dict) or not _well_formed(ticket):
                raise RetriableError(f"zammad: {API}/tickets/{int(tid)} is not a ticket")
            yield self._change(ticket, self._articles(http, ticket), self._history(http, ticket))

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The ticket of a trigger's webhook (its default payload's ``ticket.id``)."""
        return numeric_id(body, "ticket.id")

    def _search(self, http: Http, mark: dt.datetime, page: int) -> list[dict[str, Any]]:
        condition = {"ticket.updated_at": {"operator": "after (absolute)", "value": _iso(mark)}}
        body = {"condition": condition, "sort_by": "updated_at", "order_by": "asc",
                "page": page, "per_page": self.per_page}  # fmt: skip
        data = http.json("POST", SEARCH, json=body)
        if isinstance(data, dict) and isinstance(data.get("tickets"), list):  # Zammad 5.x
            assets: dict[str, Any] = _dict(data.get("assets"))
            self.ref.learn_users(assets)
            known = _dict(assets.get("Ticket"))
            items = [known.get(str(i)) if not isinstance(i, dict) else i for i in data["tickets"]]
            if any(item is None for item in items):
                raise RetriableError("zammad: the search named tickets its assets do not hold")
        elif isinstance(data, dict) and isinstance(data.get("records"), list):
            items = data["records"]
        elif isinstance(data, list):
            items = data
        else:
            raise RetriableError(f"zammad: {SEARCH} answered with neither tickets nor a list")
        tickets = [t for t in items if isinstance(t, dict)]
        if len(tickets) != len(items) or not all(_well_formed(t) for t in tickets):
            raise RetriableError(f"zammad: {SEARCH} gave tickets that are not as documented")
        return tickets

    def _change(
        self,
        ticket: dict[str, Any],
        articles: list[dict[str, Any]] | None,
        entries: list[dict[str, Any]] | None,
    ) -> TicketChange:
        tid = str(ticket["id"])
        try:
            gone = articles is None or entries is None
            fields = ticket_fields(
                ticket, articles or [], self.ref, self.mapping, self.ticket_url(tid), gone
            )
            events = history(ticket, articles, entries, self.ref, self.mapping)
            created = instant(ticket["created_at"]) if ticket.get("created_at") else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetriableError(
                f"zammad: ticket {tid} or its history is not as documented ({type(exc).__name__})"
            ) from None
        return TicketChange(
            tid,
            fields,
            events,
            created_at=created,
            updated_at=max((e.at for e in events), default=None),
        )

    def _articles(self, http: Http, ticket: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every article of a ticket (not paginated, B4); None when the ticket is gone."""
        path = f"{API}/ticket_articles/by_ticket/{int(ticket['id'])}"
        data = _json_or_none(http, path)
        if data is None:
            return None
        if not isinstance(data, list):
            raise RetriableError(f"zammad: {path} answered without a list")
        return [a for a in data if isinstance(a, dict) and "id" in a]

    def _history(self, http: Http, ticket: dict[str, Any]) -> list[dict[str, Any]] | None:
        path = f"{API}/ticket_history/{int(ticket['id'])}"
        data = _json_or_none(http, path)
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("history"), list):
            raise RetriableError(f"zammad: {path} answered without a 'history' list")
        self.ref.learn_users(data.get("assets"))
        return [e for e in data["history"] if isinstance(e, dict) and "created_at" in e]

    def _read_reference(self, http: Http) -> None:
        """States (with their state types), priorities and groups (B6)."""
        states = _index(http, f"{API}/ticket_states")
        self.ref.states = {
            int(s["id"]): (str(s["name"]), int(s.get("state_type_id") or 0))
            for s in states
            if "id" in s and "name" in s
        }
        self.mapping.types = {
            name: STATE_TYPES.get(kind, f"state type {kind}")
            for name, kind in self.ref.states.values()
        }
        self.ref.priorities = {
            int(p["id"]): str(p["name"]) for p in _index(http, f"{API}/ticket_priorities")
            if "id" in p and "name" in p
        }  # fmt: skip
        self.ref.groups = {
            int(g["id"]): str(g["name"]) for g in _index(http, f"{API}/groups")
            if "id" in g and "name" in g
        }  # fmt: skip

    # -- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Zammad's signature (B7): ``X-Hub-Signature: sha1=<hex>``, the hex HMAC-SHA1 of
        the raw body keyed by the webhook's signature token."""
        given = header(headers, SIGNATURE)
        if not self.webhook_secret or not given:
            return False
        scheme, _, hexdigest = given.strip().partition("=")
        if scheme.lower() != "sha1":
            return False
        digest = hmac.new(self.webhook_secret.encode(), body, hashlib.sha1).hexdigest()
        return hmac.compare_digest(digest.encode(), hexdigest.strip().lower().encode())


def _position(cursor: Cursor | None) -> tuple[dt.datetime | None, dict[str, str]]:
    cursor = cursor or {}
    since = cursor.get("since")
    seen = cursor.get("seen")
    try:
        when = instant(since) if isinstance(since, str) and since else None
    except ValueError:
        when = None
    kept = {str(k): str(v) for k, v in seen.items()} if isinstance(seen, dict) else {}
    return when, kept


def _json_or_none(http: Http, path: str) -> Any:
    """The decoded body, or None on 404 (the ticket is gone)."""
    response = http.request("GET", path)
    if response.status_code == 404:
        return None
    return http.decode(response, path)


def _index(http: Http, path: str) -> list[dict[str, Any]]:
    """Every row of a paginated index (``page`` from 1, ``per_page``; a short page ends)."""
    rows: list[dict[str, Any]] = []
    for page in range(1, 1000):
        data = http.get(path, page=page, per_page=INDEX_PAGE)
        if not isinstance(data, list):
            raise RetriableError(f"zammad: {path} answered without a list")
        rows += [row for row in data if isinstance(row, dict)]
        if len(data) < INDEX_PAGE:
            break
    return rows


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _well_formed(ticket: dict[str, Any]) -> bool:
    return isinstance(ticket.get("id"), int) and isinstance(ticket.get("updated_at"), str)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
