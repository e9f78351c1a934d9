"""The ``zendesk`` connector: Zendesk Support's cursor-based incremental ticket export,
each changed ticket's audits, and webhook signatures (HELPDESK-APIS.md, "Zendesk Support
REST API").

A sync walks ``/api/v2/incremental/tickets/cursor`` from the stored ``after_cursor`` (the
first time from the configured ``start``) to ``end_of_stream``. Each export page becomes one
Batch: every ticket on it gets its whole audit history fetched and turned into events, the
authors' roles and the groups' names are looked up, and only then is the page's
``after_cursor`` handed on with it. A failure anywhere on a page (a 5xx burst, a truncated
body) ends the sync before that Batch, so the stored cursor stays before the page and the
next poll reads it again; the monitor drops the events it already has by their ids.

Options: ``url`` (or ``subdomain``), ``email`` + ``token`` or ``oauth_token``, ``start``,
``statuses``/``priorities`` overrides, ``webhook_secret``.
"""

from __future__ import annotations

import base64
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
from connectors.http import Http, holding_list
from connectors.zendesk_mapping import (
    Directory,
    ValueMap,
    group_ids,
    history,
    instant,
    ticket_fields,
    user_ids,
)

EXPORT = "/api/v2/incremental/tickets/cursor"
PER_PAGE = 100  # tickets per export page: each costs one audits request or more
PAGE_SIZE = 100  # cursor pagination's largest page (audits, groups)
USERS_PER_CALL = 100  # users/show_many takes at most 100 ids
START_LAG = dt.timedelta(seconds=60)  # "start_time must be at least one minute in the past"
SIGNATURE = "X-Zendesk-Webhook-Signature"
SIGNATURE_TIME = "X-Zendesk-Webhook-Signature-Timestamp"


@register
class ZendeskConnector(Connector):
    """Zendesk Support; see the module's docstring."""

    type = "zendesk"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        per_page: int = PER_PAGE,
    ) -> None:
        super().__init__(name, options)
        url = options.get("url") or (
            f"https://{options['subdomain']}.zendesk.com" if options.get("subdomain") else ""
        )
        if not url:
            raise FatalError("zendesk: give url or subdomain")
        self.base = str(url).rstrip("/")
        email, token, oauth = (options.get(k) for k in ("email", "token", "oauth_token"))
        self._headers: dict[str, str] = {}
        self._auth: tuple[str, str] | None = None
        if oauth:
            self._headers["Authorization"] = f"Bearer {oauth}"
            self._secrets = [str(oauth)]
        elif email and token:
            self._auth = (f"{email}/token", str(token))
            basic = base64.b64encode(f"{email}/token:{token}".encode()).decode()
            self._secrets = [str(token), basic]
        else:
            raise FatalError("zendesk: give email + token, or oauth_token")
        self._clock = clock
        self.start = start_of(options, "zendesk", clock())
        self.mapping = ValueMap(options.get("statuses") or {}, options.get("priorities") or {})
        secret = options.get("webhook_secret")
        self.webhook_secret = str(secret) if secret else None
        self.per_page = per_page
        self._users: dict[str, dict[str, Any]] = {}  # by id; roles rarely change

    def ticket_url(self, ticket: str) -> str:
        return f"{self.base}/agent/tickets/{ticket}"

    # -- sync ----------------------------------------------------------------------------

    def _http(self, stop: threading.Event) -> Http:
        return Http(
            "zendesk",
            self.base,
            stop,
            headers=self._headers,
            auth=self._auth,
            secrets=self._secrets,
        )

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = self._http(stop)
        after = (cursor or {}).get("after_cursor")
        if isinstance(after, str) and after:
            params: dict[str, Any] = {"cursor": after}
            position: Cursor = {"after_cursor": after}
        else:
            since = min(self.start, self._clock() - START_LAG)
            start_time = int((cursor or {}).get("start_time") or since.timestamp())
            params, position = {"start_time": start_time}, {"start_time": start_time}
        asked = {params.get("cursor")}
        groups: dict[str, str] = {}  # read once per sync, when first needed
        while True:
            page = _body(http.get(EXPORT, per_page=self.per_page, **params), "tickets", EXPORT)
            tickets = list({int(t["id"]): t for t in page["tickets"] if _has_id(t)}.values())
            changes = self._changes(http, tickets, groups)
            end = page.get("end_of_stream") in (True, "true")
            following = page.get("after_cursor")
            notes = self.mapping.notes()
            stuck = not end and (not isinstance(following, str) or following in asked)
            if stuck:  # a cursor that does not move would loop forever: resume next poll
                notes.append("zendesk: the ticket export repeated its cursor; resuming next poll")
            if isinstance(following, str) and following:
                position = {"after_cursor": following}
            # At the end of the stream everything up to now has been delivered.
            newest = self._clock() if end else max((_updated(t) for t in tickets), default=None)
            yield Batch(changes, position, newest=newest, done=end or stuck, notes=tuple(notes))
            if end or stuck or stop.is_set():
                return
            asked.add(following)
            params = {"cursor": following}

    def _changes(
        self, http: Http, tickets: list[dict[str, Any]], groups: dict[str, str]
    ) -> list[TicketChange]:
        """Each ticket with its audits, authors and group names read; ``groups`` is filled
        the first time a ticket needs it."""
        audits = {t["id"]: self._audits(http, t) for t in tickets}
        self._learn_users(http, tickets, audits)
        if not groups and any(group_ids(t, audits[t["id"]] or ()) for t in tickets):
            groups.update(self._groups(http))
        directory = Directory(self._users, groups)
        return [self._change(t, audits[t["id"]], directory) for t in tickets]

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        """Tickets a webhook named, read at once (``tickets/show_many``, 100 per call); one
        Zendesk no longer shows is left to the incremental export, which reports deletions."""
        http = self._http(stop)
        ids = sorted({int(t) for t in tickets if t.isdigit()})
        for i in range(0, len(ids), USERS_PER_CALL):
            path = "/api/v2/tickets/show_many"
            chunk = ",".join(map(str, ids[i : i + USERS_PER_CALL]))
            found = _body(http.get(path, ids=chunk), "tickets", path)["tickets"]
            yield from self._changes(http, [t for t in found if _has_id(t)], {})

    def _change(
        self, ticket: dict[str, Any], audits: list[dict[str, Any]] | None, directory: Directory
    ) -> TicketChange:
        tid = str(ticket["id"])
        try:
            url, gone = self.ticket_url(tid), audits is None
            fields = ticket_fields(ticket, directory, self.mapping, url, gone)
            events = history(ticket, audits, directory, self.mapping)
            created = instant(ticket["created_at"]) if ticket.get("created_at") else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetriableError(
                f"zendesk: ticket {tid} or its audits are not as documented ({type(exc).__name__})"
            ) from None
        return TicketChange(
            tid,
            fields,
            events,
            created_at=created,
            updated_at=max((e.at for e in events), default=None),
        )

    def _audits(self, http: Http, ticket: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every audit of a ticket; None when it is gone (deleted: its audits 404)."""
        if ticket.get("status") == "deleted":
            return None
        return _collect(http, f"/api/v2/tickets/{int(ticket['id'])}/audits", "audits", self.base)

    def _learn_users(
        self,
        http: Http,
        tickets: list[dict[str, Any]],
        audits: dict[Any, list[dict[str, Any]] | None],
    ) -> None:
        wanted: set[str] = set()
        for ticket in tickets:
            wanted |= user_ids(ticket, audits[ticket["id"]] or ())
        missing = sorted(wanted - self._users.keys(), key=int)
        for i in range(0, len(missing), USERS_PER_CALL):
            chunk = missing[i : i + USERS_PER_CALL]
            path = "/api/v2/users/show_many"
            found = _body(http.get(path, ids=",".join(chunk)), "users", path)["users"]
            for user in found:
                if _has_id(user):
                    self._users[str(user["id"])] = {k: user.get(k) for k in ("role", "email")}
            for uid in chunk:  # not found: a deleted user, read as a customer
                self._users.setdefault(uid, {})

    def _groups(self, http: Http) -> dict[str, str]:
        groups = _collect(http, "/api/v2/groups", "groups", self.base) or []
        return {str(g["id"]): str(g.get("name") or g["id"]) for g in groups if _has_id(g)}

    # -- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Zendesk's signature: base64(HMAC-SHA256(timestamp + body)) keyed by the signing
        secret as written (not base64-decoded)."""
        signature, timestamp = header(headers, SIGNATURE), header(headers, SIGNATURE_TIME)
        if not self.webhook_secret or not signature or timestamp is None:
            return False
        digest = hmac.new(
            self.webhook_secret.encode(), timestamp.encode() + body, hashlib.sha256
        ).digest()
        return hmac.compare_digest(base64.b64encode(digest), signature.strip().encode())

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The ticket a webhook names: an event subscription's ``detail.id``, or a trigger's
        payload as the team wrote it (``ticket.id``, ``ticket_id`` or ``id``)."""
        return numeric_id(body, "detail.id", "ticket.id", "ticket_id", "id")


def _collect(http: Http, path: str, key: str, base: str) -> list[dict[str, Any]] | None:
    """Every item of a cursor-paginated list (``meta.has_more``, ``links.next``; an offset
    ``next_page`` too); None on 404."""
    items: list[dict[str, Any]] = []
    url: str = path
    params: dict[str, int] | None = {"page[size]": PAGE_SIZE}
    seen = {url}
    while True:
        response = http.request("GET", url, params=params)
        if response.status_code == 404:
            return None
        body = _body(http.decode(response, path), key, path)
        if not body[key]:  # an empty last page may still say has_more (zenpy)
            return items
        items += [item for item in body[key] if isinstance(item, dict)]
        meta, links = body.get("meta") or {}, body.get("links") or {}
        following = links.get("next") if meta.get("has_more") else body.get("next_page")
        if meta.get("has_more") and not _ours(following, base) and meta.get("after_cursor"):
            following = f"{path}?page[size]={PAGE_SIZE}&page[after]={meta['after_cursor']}"
        if not following:
            return items
        if not _ours(following, base) or following in seen:
            raise RetriableError(f"zendesk: {path} gave a next page that cannot be followed")
        seen.add(following)
        url, params = following, None


def _ours(url: Any, base: str) -> bool:
    """A next-page link on our own Zendesk (credentials go nowhere else)."""
    return isinstance(url, str) and (url.startswith(base + "/") or url.startswith("/api/"))


def _body(data: Any, key: str, path: str) -> dict[str, Any]:
    return holding_list("zendesk", data, key, path)


def _has_id(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("id"), int)


def _updated(ticket: dict[str, Any]) -> dt.datetime:
    return instant(ticket.get("generated_timestamp") or ticket["updated_at"])
