"""The ``freshdesk`` connector: Freshdesk API v2 (HELPDESK-APIS.md, "PART A").

The walk: ``GET /api/v2/tickets?updated_since=…&order_by=updated_at&order_type=asc``
with ``include=stats``, 100 a page, each changed ticket's conversations beside it, one
batch (and one cursor step) per page. Freshdesk serves at most 300 pages of a query (page
301 is a 400), so past page 300 the walk starts a new query from the newest ``updated_at``
it has read. Then the deleted and spam lists (``filter=deleted`` / ``filter=spam``, which
the default list hides) and the satisfaction ratings created since the last look.

Each list is read from its watermark minus a minute of overlap; what was already
delivered from that minute is recognised by ticket id + ``updated_at`` and skipped.
``updated_at`` has whole seconds, so a ticket is only remembered as delivered once its
second has passed on the server (``Date``): a second update within the same second is
then still picked up by the next poll.

Options (CONTRACT.md): ``url`` (or ``domain``), ``api_key``, ``start``, ``statuses`` and
``priorities`` (keys: Freshdesk ids or names), ``webhook_secret``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
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
from connectors.freshdesk_cursor import OVERLAP, State, Window, key_of
from connectors.freshdesk_history import (
    STATUSES,
    Account,
    instant,
    iso,
    status_choices,
    ticket_change,
)
from connectors.http import Http, server_time
from rules.events import Removal

SETTLED = dt.timedelta(seconds=2)  # a second this far back on the server is closed
REFERENCE_TTL = 600.0  # seconds between reloads of agents, groups and status names
REMOVALS: tuple[tuple[str, Removal], ...] = (("deleted", "deleted"), ("spam", "spam"))
WEBHOOK_HEADER = "X-Webhook-Secret"


@register
class FreshdeskConnector(Connector):
    """Freshdesk tickets, conversations, removals and ratings; see the module's docstring."""

    type = "freshdesk"
    per_page = 100  # the API's maximum
    max_pages = 300  # "A maximum of 300 pages (30000 tickets) will be returned."

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        url = options.get("url") or _domain_url(options.get("domain"))
        key = options.get("api_key")
        if not url or not isinstance(key, str) or not key:
            raise FatalError("freshdesk: `url` (or `domain`) and `api_key` are required")
        self.url = str(url).rstrip("/")
        self.api_key = key
        self.start = start_of(options, "freshdesk", utc_now())
        self.webhook_secret = options.get("webhook_secret") or None
        self.account = Account(
            self.url,
            statuses=dict(options.get("statuses") or {}),
            priorities=dict(options.get("priorities") or {}),
        )
        self._loaded_at: float | None = None
        self._reloaded = False

    def ticket_url(self, ticket: str) -> str:
        return self.account.ticket_url(ticket)

    # -- the sync ------------------------------------------------------------------------

    def _http(self, stop: threading.Event) -> Http:
        auth = (self.api_key, "X")
        return Http("freshdesk", f"{self.url}/api/v2", stop, auth=auth, secrets=[self.api_key])

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        state = State(cursor, self.start)
        http = self._http(stop)
        self._reloaded = False
        self._load_account(http)
        yield from self._tickets(http, state, stop)
        if stop.is_set() or state.caught_up is None:
            return
        for kind, reason in REMOVALS:
            yield self._removals(http, state, kind, reason)
            if stop.is_set():
                return
        yield self._ratings(http, state)

    def _tickets(self, http: Http, state: State, stop: threading.Event) -> Iterator[Batch]:
        window = state.windows["tickets"]
        for items, server_now in self._walk(http, {"include": "stats"}, window, state):
            changes = []
            for ticket in items:
                at = instant(ticket.get("updated_at"))
                if at is None:
                    self.account.note(f"ticket {ticket.get('id')} has no updated_at: skipped")
                    continue
                key = key_of(ticket, at)
                if window.fresh(key):
                    conversations = self._conversations(http, ticket)
                    changes.append(ticket_change(ticket, self.account, conversations))
                window.take(key, at, server_now - SETTLED)
            notes = self.account.take_notes()
            yield Batch(changes, state.dump(), newest=window.since, notes=notes)
            if stop.is_set():
                return

    def _removals(self, http: Http, state: State, kind: str, reason: Removal) -> Batch:
        """Deleted or spam tickets since the last look, in one batch: whether these
        filters honour ``updated_since`` and the order is unconfirmed, so the whole list
        is read before its watermark moves, and anything older is dropped here."""
        window = state.windows[kind]
        floor = window.since - OVERLAP
        changes = {}
        for items, server_now in self._walk(
            http, {"filter": kind, "include": "stats"}, window, state
        ):
            for ticket in items:
                at = instant(ticket.get("updated_at"))
                if at is None or at < floor:
                    continue
                key = key_of(ticket, at)
                if window.fresh(key):
                    changes[key] = ticket_change(ticket, self.account, removed=reason)
                window.take(key, at, server_now - SETTLED)
        return self._batch(list(changes.values()), state)

    def _ratings(self, http: Http, state: State) -> Batch:
        """New satisfaction ratings: each rated ticket is read again (with its history),
        so a rating never creates a ticket the monitor knows nothing else about."""
        window = state.windows["ratings"]
        floor = window.since - OVERLAP
        rated: dict[int, list[dict[str, Any]]] = {}
        pages = self._pages(http, "surveys/satisfaction_ratings", {"created_since": iso(floor)})
        for items, server_now, _ in pages:
            for rating in items:
                at = instant(rating.get("created_at"))
                if at is None or at < floor or rating.get("ticket_id") is None:
                    continue
                key = key_of(rating, at)
                if window.fresh(key):
                    rated.setdefault(rating["ticket_id"], []).append(rating)
                window.take(key, at, server_now - SETTLED)
        changes = [self._read(http, ticket_id, ratings) for ticket_id, ratings in rated.items()]
        found = [change for change in changes if change is not None]
        return self._batch(found, state, done=True)

    def _read(
        self, http: Http, ticket_id: Any, ratings: Sequence[Mapping[str, Any]] = ()
    ) -> TicketChange | None:
        """One ticket read on its own, with its conversations; None when it is gone (the
        deleted list tells of it)."""
        response = http.request("GET", f"tickets/{ticket_id}", params={"include": "stats"})
        if response.status_code == 404:
            return None
        ticket = http.decode(response, f"tickets/{ticket_id}")
        if not isinstance(ticket, dict) or instant(ticket.get("updated_at")) is None:
            raise RetriableError(f"freshdesk: /api/v2/tickets/{ticket_id} is not a ticket")
        removed: Removal | None = (
            "deleted" if ticket.get("deleted") else "spam" if ticket.get("spam") else None
        )
        conversations = self._conversations(http, ticket)
        return ticket_change(ticket, self.account, conversations, ratings, removed)

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        """Tickets a webhook named, each read at once with its conversations."""
        http = self._http(stop)
        self._reloaded = False
        self._load_account(http)
        for ticket_id in tickets:
            change = self._read(http, int(ticket_id))
            if change is not None:
                yield change

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The ticket the automation's payload names: Freshdesk's own
        ``{"freshdesk_webhook": {"ticket_id": ...}}``, or ``ticket_id``, ``ticket.id`` or
        ``id`` in a payload the team wrote with the ``{{ticket.id}}`` placeholder."""
        return numeric_id(body, "freshdesk_webhook.ticket_id", "ticket_id", "ticket.id", "id")

    def _batch(self, changes: list[TicketChange], state: State, done: bool = False) -> Batch:
        newest = state.caught_up or state.windows["tickets"].since
        return Batch(changes, state.dump(), newest, done, self.account.take_notes())

    # -- reading lists -------------------------------------------------------------------

    def _walk(
        self, http: Http, params: dict[str, Any], window: Window, state: State
    ) -> Iterator[tuple[list[dict[str, Any]], dt.datetime]]:
        """Pages of ``/tickets`` by ``updated_at`` ascending from the window's watermark
        (less the overlap), each with the server's time. The caller takes each page into
        the window before asking for the next: a walk past the page cap restarts from it."""
        since, restarted_at = window.since - OVERLAP, None
        while True:
            query = {**params, "updated_since": iso(since), "order_by": "updated_at"}
            query["order_type"] = "asc"
            more, server_now = False, window.since
            for n, page in enumerate(self._pages(http, "tickets", query), start=1):
                items, server_now, more = page
                yield items, server_now
                if n == self.max_pages:
                    break
            if not more:
                if "filter" not in params:
                    state.caught_up = server_now
                return
            if restarted_at is not None and window.since <= restarted_at:
                raise RetriableError(
                    f"freshdesk: more than {self.max_pages} pages of tickets changed at "
                    f"{iso(window.since)}; the list cannot be read past them"
                )
            # Page 301 would be a 400: query again from the newest updated_at read (a
            # second early, in case updated_since is exclusive; `seen` drops repeats).
            restarted_at = window.since
            since = window.since - dt.timedelta(seconds=1)

    def _pages(
        self, http: Http, path: str, params: Mapping[str, Any], missing_ok: bool = False
    ) -> Iterator[tuple[list[dict[str, Any]], dt.datetime, bool]]:
        """Each page of a list (a bare JSON array) with the server's time and whether the
        ``Link`` header names a next page; the next page is asked for by number."""
        page = 1
        while True:
            query = {**params, "per_page": self.per_page, "page": page}
            response = http.request("GET", path, params=query)
            if response.status_code == 404:
                if missing_ok:
                    return
                raise RetriableError(f"freshdesk: /api/v2/{path} answered 404")
            body = http.decode(response, path)
            if not isinstance(body, list):
                raise RetriableError(f"freshdesk: /api/v2/{path} did not answer a list")
            more = "next" in response.links
            yield body, server_time(response) or utc_now(), more
            if not more:
                return
            page += 1

    def _all(self, http: Http, path: str, missing_ok: bool = False) -> list[dict[str, Any]]:
        return [item for items, _, _ in self._pages(http, path, {}, missing_ok) for item in items]

    def _conversations(self, http: Http, ticket: Mapping[str, Any]) -> list[dict[str, Any]]:
        conversations = self._all(http, f"tickets/{ticket['id']}/conversations", missing_ok=True)
        account = self.account
        requester = ticket.get("requester_id")
        strangers = {
            c.get("user_id")
            for c in conversations
            if not c.get("incoming") and c.get("user_id") not in (None, requester)
        } - account.agents
        group, status = ticket.get("group_id"), str(ticket.get("status"))
        unknown = group is not None and group not in account.groups
        unknown |= status not in STATUSES and status not in account.status_names
        if (strangers or unknown) and not self._reloaded:  # new since the lists were read
            self._reloaded = True
            self._load_account(http, force=True)
        return conversations

    def _load_account(self, http: Http, force: bool = False) -> None:
        """Agents, group names and status names, reloaded every few minutes."""
        now = time.monotonic()
        if not force and self._loaded_at is not None and now - self._loaded_at < REFERENCE_TTL:
            return
        account = self.account
        account.agents = {a["id"] for a in self._all(http, "agents") if "id" in a}
        groups = self._all(http, "groups", missing_ok=True)
        account.groups = {g["id"]: str(g.get("name") or g["id"]) for g in groups if "id" in g}
        response = http.request("GET", "ticket_fields")
        if response.status_code != 404:
            account.status_names = status_choices(http.decode(response, "ticket_fields"))
        self._loaded_at = now

    # -- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Freshdesk signs no webhook (HELPDESK-APIS.md A7): the automation's "Trigger
        webhook" action must carry the configured ``webhook_secret``: as HTTP Basic
        credentials (as user, Freshdesk's own API-key convention, or as password), as a
        Bearer token, or in an ``X-Webhook-Secret`` header. Without a configured secret
        every webhook is refused."""
        if not self.webhook_secret:
            return False
        expected = str(self.webhook_secret).encode()
        offered = [header(headers, WEBHOOK_HEADER) or ""]
        authorization = header(headers, "Authorization") or ""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                user = password = ""
            offered += [user, password]
        elif scheme.lower() == "bearer":
            offered.append(value.strip())
        matched = False
        for candidate in offered:  # compare every one: the time tells nothing
            matched |= bool(candidate) and hmac.compare_digest(candidate.encode(), expected)
        return matched


def _domain_url(domain: Any) -> str | None:
    if not domain:
        return None
    domain = str(domain)
    return f"https://{domain if '.' in domain else domain + '.freshdesk.com'}"
