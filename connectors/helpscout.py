"""The ``helpscout`` connector: Help Scout's Mailbox API 2.0 conversations, each changed
conversation's threads, OAuth2 client credentials and webhook signatures (HELPDESK-APIS.md,
"PART B — HELP SCOUT MAILBOX API 2.0").

The walk: ``GET /v2/conversations?status=all&sortField=modifiedAt&sortOrder=asc&
modifiedSince=…`` (25 a page, HAL: ``_embedded.conversations``, absent on an empty page,
``page.totalPages``, ``_links.next``), every changed conversation's threads beside it (all
pages of ``/v2/conversations/{id}/threads``), one Batch per page. The v2 conversation has no
``modifiedAt``, so the watermark is the latest change the list shows of each conversation
(``createdAt``, ``userUpdatedAt``, ``closedAt``, ``customerWaitingSince.time``; never later
than the real modification). Each list query starts a minute before the watermark; what was
already delivered from that minute is recognised by conversation id + that time and skipped
(it is only remembered once its second has passed on the server, ``Date``). After a page that
moved the watermark the list is asked again from the new one (page 1), so a conversation
changed while the walk runs cannot shift another past a page already read ("page drift").
A failure anywhere on a page ends the sync before its Batch: the stored cursor stays behind
the page, and the next poll reads it again.

Then the satisfaction ratings (connectors/helpscout_ratings.py): the Plus/Pro happiness
report from the ratings watermark less an hour to now, page by page (``page``/``pages``);
each row not yet delivered has its rating read from ``GET /v2/ratings/{ratingId}`` (the
report's own value key is unconfirmed) and its conversation read again, one Batch per report
page. The watermark moves only with the last page. A plan without reports (403/404) is noted
once a process ("ratings need Help Scout Plus or Pro: not read") and the sync goes on.

OAuth2: ``POST {url}/v2/oauth2/token`` (client credentials); the access token is kept until
a minute before ``expires_in`` runs out, and a 401 gets one fresh token before it counts as
revoked credentials. Rate limits: a 429's ``X-RateLimit-Retry-After`` is honoured (the
``Retry-After`` of the legacy API too).

Options (CONTRACT.md): ``url`` (default the public API), ``app_id``, ``app_secret``,
``mailboxes`` (ids or names), ``start``, ``statuses``, ``priorities`` (keys: tags),
``webhook_secret``. The mapping's limits are in connectors/helpscout_mapping.py.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import requests

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
from connectors.helpscout_mapping import ValueMap, fields_of, history, instant, iso, stamp
from connectors.helpscout_ratings import OVERLAP as RATING_OVERLAP
from connectors.helpscout_ratings import (
    PLAN_NOTE,
    RATING,
    REPORT,
    RatingWindow,
    answer,
    conversation_of,
    report_page,
    row_key,
)
from connectors.http import Http, server_time
from connectors.oauth import AccessToken
from rules.events import Removal

API = "https://api.helpscout.net"
TOKEN = "/v2/oauth2/token"
LIST = "/v2/conversations"
OVERLAP = dt.timedelta(seconds=60)
SETTLED = dt.timedelta(seconds=2)  # a second this far back on the server is closed
WEB = "https://secure.helpscout.net/conversation"
SIGNATURE = "X-HelpScout-Signature"
NOT_A_RATING = (
    "helpscout: a happiness report row's ratingId names no rating of its conversation "
    "(GET /v2/ratings/{ratingId}); such rows are not counted"
)
MAX_PAGES = 10_000  # of a paged list (threads, the report): a loop guard


def _rate_headers(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Help Scout names its wait ``X-RateLimit-Retry-After``; Http reads ``Retry-After``."""
    wait = response.headers.get("X-RateLimit-Retry-After")
    if response.status_code == 429 and wait is not None and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = wait


@register
class HelpscoutConnector(Connector):
    """Help Scout; see the module's docstring."""

    type = "helpscout"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, options)
        self.base = str(options.get("url") or API).rstrip("/")
        app_id, secret = options.get("app_id"), options.get("app_secret")
        if not app_id or not secret:
            raise FatalError("helpscout: give app_id and app_secret")
        self.app_id, self.app_secret = str(app_id), str(secret)
        self._clock = clock
        self.start = start_of(options, "helpscout", clock())
        self.mapping = ValueMap(options.get("statuses") or {}, options.get("priorities") or {})
        self.mailbox_filter = [str(m) for m in options.get("mailboxes") or ()]
        secret_hook = options.get("webhook_secret")
        self.webhook_secret = str(secret_hook) if secret_hook else None
        form = {
            "grant_type": "client_credentials",
            "client_id": self.app_id,
            "client_secret": self.app_secret,
        }
        # bad credentials are 401/403 here (a 400 is retried); a 404 means a wrong ``url``
        self.token = AccessToken(
            "helpscout",
            TOKEN,
            form,
            client=f"app {self.app_id}",
            advice="check the app, its user and its permissions",
            refused=(401, 403, 404),
            monotonic=monotonic,
        )

    def ticket_url(self, ticket: str) -> str:
        return f"{WEB}/{ticket}"

    def _get(self, http: Http, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """A GET with the access token (renewed once on a 401); the response."""
        response = self.token.get(http, path, params, allow=(403,), allow_redirects=False)
        if response.status_code == 403:
            raise FatalError(self.token.denied(http, path, 403))
        return response

    # -- the sync ------------------------------------------------------------------------

    def _http(self, stop: threading.Event) -> Http:
        http = Http("helpscout", self.base, stop, secrets=[self.app_secret, self.token.value or ""])
        http.session.hooks["response"].append(_rate_headers)
        return http

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = self._http(stop)
        window = _Window.load(cursor, self.start)
        rated = RatingWindow.load(cursor, self.start)

        def cursor_now() -> Cursor:
            return {**window.dump(), "ratings": rated.dump()}

        mailboxes = self._mailboxes(http)
        params: dict[str, Any] = {"status": "all", "sortField": "modifiedAt", "sortOrder": "asc"}
        if self.mailbox_filter:
            params["mailbox"] = ",".join(self._mailbox_ids(mailboxes))
        page, since = 1, window.since
        while True:
            query = {**params, "modifiedSince": iso(since - OVERLAP), "page": page}
            response = self._get(http, LIST, query)
            body = _page(http, response, "conversations", LIST)
            server_now = server_time(response) or utc_now()
            changes = []
            for conversation in body["_embedded"]["conversations"]:
                if not _has_id(conversation):
                    continue
                change = self._change(http, conversation, mailboxes, window, server_now)
                if change is not None:
                    changes.append(change)
            following = _has_next(body)
            newest = self._clock() if not following else window.since
            yield Batch(changes, cursor_now(), newest=newest,
                        notes=tuple(self.mapping.notes()))  # fmt: skip
            if stop.is_set():
                return
            if not following:
                break
            if window.since > since:  # ask again from the new watermark
                page, since = 1, window.since
            else:
                page += 1
        yield from self._rating_walk(http, rated, cursor_now, mailboxes, stop)

    def _rating_walk(
        self,
        http: Http,
        rated: RatingWindow,
        cursor_now: Callable[[], Cursor],
        mailboxes: Mapping[str, str],
        stop: threading.Event,
    ) -> Iterator[Batch]:
        """The happiness report from the ratings watermark (less the overlap) to now, one
        Batch per page holding the rated conversations; the watermark moves to the end of
        the walk only with its last page. No report on this plan (403/404): noted once."""
        end = self._clock()
        params = {"start": iso(rated.since - RATING_OVERLAP), "end": iso(end),
                  "sortField": "modifiedAt", "sortOrder": "ASC"}  # fmt: skip
        if self.mailbox_filter:
            params["mailboxes"] = ",".join(self._mailbox_ids(mailboxes))
        for page in range(1, MAX_PAGES):
            query = {**params, "page": page}
            response = self.token.get(http, REPORT, query, allow=(403, 404), allow_redirects=False)
            if response.status_code in (403, 404):
                self.mapping.once(PLAN_NOTE)
                yield Batch([], cursor_now(), newest=end, done=True,
                            notes=tuple(self.mapping.notes()))  # fmt: skip
                return
            if response.status_code != 200:
                raise RetriableError(f"helpscout: {REPORT} answered HTTP {response.status_code}")
            rows, following = report_page(http.decode(response, REPORT), REPORT)
            changes: dict[int, TicketChange] = {}
            for row in rows:
                key = row_key(row)
                if key is None:
                    self.mapping.once("helpscout: a happiness report row without a ratingId "
                                      "and a conversation id was skipped")  # fmt: skip
                elif rated.fresh(key):
                    self._rated(http, row, mailboxes, changes)
                    rated.take(key, row, end)
            if not following:
                rated.since = max(rated.since, end)
            yield Batch(list(changes.values()), cursor_now(), newest=end, done=not following,
                        notes=tuple(self.mapping.notes()))  # fmt: skip
            if not following or stop.is_set():
                return
        raise RetriableError(f"helpscout: {REPORT} did not end")

    def _rated(
        self,
        http: Http,
        row: Mapping[str, Any],
        mailboxes: Mapping[str, str],
        changes: dict[int, TicketChange],
    ) -> None:
        """A report row's rating, read from ``/v2/ratings/{ratingId}``, added to its
        conversation's change (the conversation read again, so a rating never makes a
        ticket the monitor knows nothing else about)."""
        rid, cid = int(row["ratingId"]), int(row["id"])
        path = f"{RATING}/{rid}"
        response = self._get(http, path)
        if response.status_code not in (200, 404):
            raise RetriableError(f"helpscout: {path} answered HTTP {response.status_code}")
        rating: dict[str, Any] = {}
        if response.status_code == 200:
            rating = http.decode(response, path, dict)
        if conversation_of(rating) != cid:  # gone, or ratingId is not what it seems
            self.mapping.once(NOT_A_RATING)
            return
        try:
            event = answer(rating)
        except ValueError:
            self.mapping.note("rating", rating.get("rating"), "", "no answer")
            return
        except (KeyError, TypeError):
            self.mapping.once("helpscout: a rating without a readable time was not counted")
            return
        if event is None:  # "unknown": no answer
            return
        change = changes.get(cid) or self._read(http, cid, mailboxes)
        if change is not None:  # else merged or deleted: the list brings its removal
            changes[cid] = dataclasses.replace(change, events=[*change.events, event])

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        """Conversations a webhook named, each read at once with its threads; one merged or
        deleted meanwhile is left to the next sync. Conversations only: a rating a
        ``satisfaction.ratings`` webhook told of comes with the next sync's report walk."""
        http = self._http(stop)
        mailboxes = self._mailboxes(http)
        for cid in tickets:
            change = self._read(http, int(cid), mailboxes)
            if change is not None:
                yield change

    def _read(self, http: Http, cid: int, mailboxes: Mapping[str, str]) -> TicketChange | None:
        """One conversation read on its own with its threads; None when it was merged or
        deleted."""
        path = f"{LIST}/{cid}"
        response = self._get(http, path)
        if response.status_code != 200:  # 301 merged, 404 deleted
            return None
        conversation = _page(http, response, "threads", path)
        if not _has_id(conversation):
            raise RetriableError(f"helpscout: {path} is not a conversation")
        server_now = server_time(response) or utc_now()
        return self._change(http, conversation, mailboxes, _Window(self.start), server_now)

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The conversation a webhook names: a ``convo.*`` body is the conversation (its
        ``id``), a ``satisfaction.ratings`` body is a Rating (its ``conversationId``, which
        a conversation does not have)."""
        return numeric_id(body, "conversationId", "id")

    def _change(
        self,
        http: Http,
        conversation: dict[str, Any],
        mailboxes: Mapping[str, str],
        window: _Window,
        server_now: dt.datetime,
    ) -> TicketChange | None:
        cid = str(conversation["id"])
        try:
            at = stamp(conversation)
        except (KeyError, TypeError, ValueError):
            raise RetriableError(f"helpscout: conversation {cid} is not as documented") from None
        key = f"{cid}@{int(at.timestamp())}"
        if not window.fresh(key):
            return None
        threads, gone = self._threads(http, cid, conversation)
        try:
            fields = fields_of(conversation, mailboxes, self.mapping, self.ticket_url(cid))
            events = history(conversation, threads, mailboxes, self.mapping, gone)
            created = instant(conversation["createdAt"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetriableError(
                f"helpscout: conversation {cid} or its threads are not as documented "
                f"({type(exc).__name__})"
            ) from None
        if gone:
            fields["status"] = "closed"
        window.take(key, at, server_now - SETTLED)
        return TicketChange(cid, fields, events, created_at=created,
                            updated_at=max((e.at for e in events), default=at))  # fmt: skip

    def _threads(
        self, http: Http, cid: str, conversation: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]] | None, Removal | None]:
        """Every thread of a conversation (newest first on the wire), or None and why not:
        301 (merged into another), 404 (deleted)."""
        if conversation.get("state") == "deleted":
            return None, "deleted"
        path, threads = f"{LIST}/{int(cid)}/threads", []
        for page in range(1, MAX_PAGES):
            response = self._get(http, path, {"page": page})
            if response.status_code in (301, 302, 303, 307, 308):
                return None, "merged"
            if response.status_code == 404:
                return None, "deleted"
            body = _page(http, response, "threads", path)
            threads += [t for t in body["_embedded"]["threads"] if isinstance(t, dict)]
            if not _has_next(body):
                return threads, None
        raise RetriableError(f"helpscout: {path} did not end")

    def _mailboxes(self, http: Http) -> dict[str, str]:
        """Mailbox names by id (the queue); ids stand in when they cannot be read."""
        names: dict[str, str] = {}
        for page in range(1, MAX_PAGES):
            response = self._get(http, "/v2/mailboxes", {"page": page})
            if response.status_code != 200:
                return names
            body = _page(http, response, "mailboxes", "/v2/mailboxes")
            for box in body["_embedded"]["mailboxes"]:
                if isinstance(box, dict) and box.get("id") is not None:
                    names[str(box["id"])] = str(box.get("name") or box["id"])
            if not _has_next(body):
                return names
        return names

    def _mailbox_ids(self, mailboxes: Mapping[str, str]) -> list[str]:
        by_name = {name.lower(): mid for mid, name in mailboxes.items()}
        ids = []
        for wanted in self.mailbox_filter:
            found = wanted if wanted.isdigit() else by_name.get(wanted.lower())
            if found is None:
                raise FatalError(f"helpscout: no mailbox {wanted!r} (mailboxes: by id or name)")
            ids.append(found)
        return ids

    # -- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Help Scout's signature: base64(HMAC-SHA1(raw body)) keyed by the secret."""
        signature = header(headers, SIGNATURE)
        if not self.webhook_secret or not signature:
            return False
        digest = hmac.new(self.webhook_secret.encode(), body, hashlib.sha1).digest()
        return hmac.compare_digest(base64.b64encode(digest), signature.strip().encode())


class _Window:
    """The cursor: every change before ``since`` is delivered, and ``seen`` names what was
    delivered from the overlap (``"<id>@<unix time>"``)."""

    def __init__(self, since: dt.datetime, seen: set[str] | None = None) -> None:
        self.since, self.seen = since, seen or set()
        self.taken: set[str] = set()

    @classmethod
    def load(cls, cursor: Cursor | None, start: dt.datetime) -> _Window:
        if cursor is None:
            return cls(start)
        try:
            return cls(instant(cursor["since"]), {str(k) for k in cursor.get("seen", ())})
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FatalError(f"helpscout: not a cursor of this connector: {cursor!r}") from None

    def fresh(self, key: str) -> bool:
        return key not in self.seen and key not in self.taken

    def take(self, key: str, at: dt.datetime, settled_before: dt.datetime) -> None:
        self.since = max(self.since, at)
        self.taken.add(key)
        if at <= settled_before:
            self.seen.add(key)

    def dump(self) -> Cursor:
        floor = (self.since - OVERLAP - dt.timedelta(seconds=1)).timestamp()
        seen = sorted(k for k in self.seen if int(k.rpartition("@")[2]) >= floor)
        return {"since": iso(self.since), "seen": seen}


def _page(http: Http, response: requests.Response, key: str, path: str) -> dict[str, Any]:
    """A HAL page; an empty one has no ``_embedded`` (it is given an empty list here)."""
    body = http.decode(response, path)
    if not isinstance(body, dict) or response.status_code != 200:
        raise RetriableError(f"helpscout: {path} answered HTTP {response.status_code}")
    embedded = body.get("_embedded")
    if embedded is None:
        body["_embedded"] = {key: []}
    elif not isinstance(embedded, dict) or not isinstance(embedded.get(key, []), list):
        raise RetriableError(f"helpscout: {path} answered without a {key!r} list")
    else:
        embedded.setdefault(key, [])
    return body


def _has_id(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("id"), int)


def _has_next(body: Mapping[str, Any]) -> bool:
    """A next page: the ``next`` link, or ``page.number`` below ``page.totalPages``."""
    links = body.get("_links") or {}
    if isinstance(links, dict) and isinstance(links.get("next"), dict):
        return True
    page = body.get("page") or {}
    number, total = page.get("number"), page.get("totalPages")
    return isinstance(number, int) and isinstance(total, int) and 0 < number < total
