"""The ``zammad`` connector: Zammad's condition search on ``ticket.updated_at``, each changed
ticket's articles, history and tags, a check of the open tickets for hard deletions, and
webhook signatures (HELPDESK-APIS.md, "B. Zammad (REST API v1)").

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
every fresh ticket gets its articles (``/ticket_articles/by_ticket``), history
(``/ticket_history``) and tags (``/tags?object=Ticket&o_id=N`` → ``{"tags": [...]}``)
fetched first; a failure anywhere on a page ends the sync before its Batch, so the stored
cursor stays before the page and the next poll reads it again. When tags were added or
removed is read from the ticket history (zammad_mapping). The tags endpoint is not in
HELPDESK-APIS.md; it is zammad/zammad ``app/controllers/tags_controller.rb`` (``list``).
Zammad's ticket ``type`` is not read (the doc names none): ``type`` is "".

Hard deletions (a ticket destroyed, not merged or set to ``removed``) leave no trace in the
search. The cursor's ``open`` keeps the ids of the open tickets delivered (the newest
:data:`REMEMBER` by ``updated_at``, oldest first). At the end of each sync the remembered ones
this sync's search did not return are checked, :data:`CHECK` at a time, rotating by id
(``checked`` is where the last check stopped): one search with ``condition``
``ticket.id`` ``is`` the list of ids, then ``GET /tickets/{id}`` for each the search did not
return (at most :data:`CONFIRM` a sync). Only Zammad's own 404 for it (``{"error":
"Couldn't find Ticket with 'id'=N"}``, B8) counts as a deletion: a
:class:`~rules.events.Removed` ``deleted`` as of the check. Any other 404 (a proxy's page)
is a RetriableError; a 403 (the token no longer sees the ticket) drops it from ``open``
without an event. So the search's list form (not in HELPDESK-APIS.md; Zammad's selector
turns ``is`` into ``IN (?)``) is only a shortcut: were it to return too little, more
tickets would be asked for one by one, never removed by mistake. A failed check ends the
sync with a RetriableError after the walk's last page is stored; it is retried next poll.

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
    header,
    numeric_id,
    register,
    start_of,
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
from rules.events import DONE, Removed

API = "/api/v1"
SEARCH = f"{API}/tickets/search"
PER_PAGE = 100  # tickets per search page (the search allows 200): each costs 3 requests
MAX_PER_PAGE = 200
REMEMBER = 5000  # open tickets kept in the cursor to check for hard deletions
CHECK = MAX_PER_PAGE  # remembered tickets checked per sync: one search page
CONFIRM = 20  # tickets the check's search did not return, asked for one by one per sync
INDEX_PAGE = 100  # CanPaginate's default for the reference lists
OVERLAP = dt.timedelta(minutes=5)
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
        remember: int = REMEMBER,
        check: int = CHECK,
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
        self.start = start_of(options, "zammad", clock())
        self.mapping = ValueMap(options.get("statuses") or {}, options.get("priorities") or {})
        secret = options.get("webhook_secret")
        self.webhook_secret = str(secret) if secret else None
        self.per_page = max(1, min(per_page, MAX_PER_PAGE))
        self.remember = max(0, remember)
        self.check = max(1, min(check, MAX_PER_PAGE))
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
        remembered, checked = _remembered(cursor)
        mark = since - OVERLAP if since is not None else self.start
        page, previous, read = 1, None, False
        walked: set[int] = set()  # every ticket this sync's search returned
        while True:
            tickets = self._search(http, _after(mark), page, self.per_page)
            walked |= {int(t["id"]) for t in tickets}
            full = len(tickets) >= self.per_page
            fresh = list({int(t["id"]): t for t in tickets
                          if seen.get(str(t["id"])) != t["updated_at"]}.values())  # fmt: skip
            if fresh and not read:  # reference data once per sync, when first needed
                self._read_reference(http)
                read = True
            changes = [self._change(t, *self._read(http, t)) for t in fresh]
            newest = max((instant(t["updated_at"]) for t in tickets), default=None)
            for ticket in fresh:
                seen[str(ticket["id"])] = ticket["updated_at"]
            if newest is not None and (since is None or newest > since):
                since = newest
            if since is not None:
                seen = {k: v for k, v in seen.items() if instant(v) >= since - OVERLAP}
            remembered = self._remember(remembered, changes)
            notes = self.mapping.notes()
            ids = [t["id"] for t in tickets]
            stuck = page > 1 and ids == previous  # the next page of a query repeated the last
            if stuck:
                notes.append("zammad: the search repeated a page; resuming next poll")
            done = not full or stuck

            position: Cursor = {"since": _iso(since), "seen": dict(seen)} if since else {}
            position = position or dict(cursor or {})
            gone: list[TicketChange] = []
            if done:
                try:
                    gone, remembered, checked = self._check(
                        http, remembered, walked, checked, notes
                    )
                except RetriableError:  # the page is stored; the check waits for a later sync
                    yield Batch(changes, _with(position, remembered, checked), newest=newest,
                                notes=tuple(notes))  # fmt: skip
                    raise
            yield Batch(
                changes + gone,
                _with(position, remembered, checked),
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
            yield self._change(ticket, *self._read(http, ticket))

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The ticket of a trigger's webhook (its default payload's ``ticket.id``)."""
        return numeric_id(body, "ticket.id")

    def _search(
        self, http: Http, condition: dict[str, Any], page: int, per_page: int
    ) -> list[dict[str, Any]]:
        """One page of the condition search, ascending by ``updated_at``, in either shape."""
        body = {"condition": condition, "sort_by": "updated_at", "order_by": "asc",
                "page": page, "per_page": per_page}  # fmt: skip
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

    def _remember(self, remembered: list[int], changes: list[TicketChange]) -> list[int]:
        """The open tickets to check for deletion after these changes: each delivered one
        moved to the end (the newest) if open, dropped if not; the newest :attr:`remember`."""
        delivered = {int(c.ticket): c.fields.get("status") not in DONE for c in changes}
        kept = [tid for tid in remembered if tid not in delivered]
        kept += [tid for tid, still_open in delivered.items() if still_open]
        return kept[-self.remember :] if self.remember else []

    def _check(
        self,
        http: Http,
        remembered: list[int],
        walked: set[int],
        checked: int,
        notes: list[str],
    ) -> tuple[list[TicketChange], list[int], int]:
        """Hard deletions among the remembered open tickets this sync's search did not
        return (see the module's docstring): the Removed changes, the tickets still to
        remember and where the rotation stopped."""
        candidates = sorted(tid for tid in remembered if tid not in walked)
        turn = [t for t in candidates if t > checked] + [t for t in candidates if t <= checked]
        chunk = turn[: self.check]
        if not chunk:
            return [], remembered, 0
        condition = {"ticket.id": {"operator": "is", "value": [str(t) for t in chunk]}}
        there = {int(t["id"]) for t in self._search(http, condition, 1, len(chunk))}
        missing = [t for t in chunk if t not in there]
        if len(missing) > CONFIRM:  # the rest of the chunk waits for the next sync
            chunk = chunk[: chunk.index(missing[CONFIRM])]
            missing = missing[:CONFIRM]
        deleted, hidden = [], []
        for tid in missing:
            path = f"{API}/tickets/{tid}"
            response = http.request("GET", path, allow=(403, 404))
            if response.status_code == 403:
                hidden.append(tid)
            elif response.status_code == 404:
                try:
                    body = response.json()
                except ValueError:  # a proxy's page: the request may never have reached Zammad
                    body = None
                if not _not_found(body, tid):
                    raise RetriableError(f"zammad: {path} answered 404 without Zammad's error")
                deleted.append(tid)
        if hidden:
            notes.append(f"zammad: {len(hidden)} open ticket(s) no longer visible to the token;"
                         " no longer checked for deletion")  # fmt: skip
        now = self._clock()
        changes = [
            TicketChange(str(tid), {"status": "closed"},
                         [Removed(f"t{tid}:deleted", now, "deleted")])
            for tid in deleted
        ]  # fmt: skip
        dropped = set(deleted) | set(hidden)
        return changes, [t for t in remembered if t not in dropped], chunk[-1]

    def _read(
        self, http: Http, ticket: dict[str, Any]
    ) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, frozenset[str]]:
        """A ticket's articles, history and current tags (None, None: it is gone)."""
        articles, entries = self._articles(http, ticket), self._history(http, ticket)
        if articles is None or entries is None:
            return None, None, frozenset()
        return articles, entries, self._tags(http, ticket)

    def _change(
        self,
        ticket: dict[str, Any],
        articles: list[dict[str, Any]] | None,
        entries: list[dict[str, Any]] | None,
        tags: frozenset[str] = frozenset(),
    ) -> TicketChange:
        tid = str(ticket["id"])
        try:
            gone = articles is None or entries is None
            fields = ticket_fields(
                ticket, articles or [], self.ref, self.mapping, self.ticket_url(tid), gone, tags
            )
            events = history(ticket, articles, entries, self.ref, self.mapping, tags)
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

    def _tags(self, http: Http, ticket: dict[str, Any]) -> frozenset[str]:
        """The ticket's tags now: ``{"tags": ["a", "b"]}``."""
        path = f"{API}/tags"
        data = http.get(path, object="Ticket", o_id=int(ticket["id"]))
        tags = data.get("tags") if isinstance(data, dict) else None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise RetriableError(f"zammad: {path} answered without a 'tags' list")
        return frozenset(tags)

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


def _remembered(cursor: Cursor | None) -> tuple[list[int], int]:
    """The cursor's open tickets (oldest first) and where the last check stopped."""
    cursor = cursor or {}
    kept = cursor.get("open")
    kept = kept if isinstance(kept, list) else []
    ids = [int(t) for t in kept if isinstance(t, int | str) and str(t).isdigit()]
    checked = cursor.get("checked")
    return list(dict.fromkeys(ids)), checked if isinstance(checked, int) else 0


def _with(position: Cursor, remembered: list[int], checked: int) -> Cursor:
    """The walk's position with the open tickets to check and where the check stopped."""
    position = {k: v for k, v in position.items() if k not in ("open", "checked")}
    if remembered or checked:
        position |= {"open": list(remembered), "checked": checked}
    return position


def _after(mark: dt.datetime) -> dict[str, Any]:
    return {"ticket.updated_at": {"operator": "after (absolute)", "value": _iso(mark)}}


def _not_found(body: Any, tid: int) -> bool:
    """Zammad's own answer that ticket ``tid`` does not exist (B8)."""
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, str) and error.startswith(f"Couldn't find Ticket with 'id'={tid}")


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
