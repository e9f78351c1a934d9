"""The ``gmail`` connector: one mailbox through the Gmail API v1, headers only
(HELPDESK-APIS.md, "GMAIL API v1"). Scope: ``https://www.googleapis.com/auth/gmail.metadata``
(``gmail.readonly`` works too); nothing here needs a body.

First sync: ``users.getProfile`` (its ``historyId`` is where the incremental sync will start,
read *before* listing so nothing that arrives meanwhile is lost), then ``messages.list`` for
``labelIds=INBOX``, ``labelIds=SENT`` and the solved label (500 a page, ``pageToken``; no
``q``: the metadata scope refuses it), each message read with ``messages.get
format=metadata`` and the threading and classification headers only. Lists come newest
first; a list stops at a page whose messages all arrived (``internalDate``) before the
configured ``start``. Messages are threaded oldest first (:mod:`connectors.mail`), with
Gmail's ``threadId`` as the thread.

Incremental: ``users.history.list`` from the stored ``historyId`` (``messageAdded``,
``labelAdded``, ``labelRemoved``; all pages read before anything is delivered, so a failure
anywhere leaves the stored cursor where it was), then the new messages read as above. A 404
means the stored id has expired: a full resync, in which messages already threaded (by
Message-ID) are skipped, so nothing is delivered twice.

Status: ``SENT`` = the team wrote it. The ``solved_label`` (a label name or id) added to a
message of a thread solves the thread; removed, a solved thread is open again; a customer
writing again reopens it (:class:`connectors.mail.Threads`). History records carry no time,
so a label change counts from the poll that saw it, or from a second before the next
message the same history shows arriving, whichever is earlier; on a first sync, a labelled
message solves its thread as of its own arrival.

OAuth: a refresh-token grant (``client_id``, ``client_secret``, ``refresh_token``). The token
endpoint is ``https://oauth2.googleapis.com/token`` when ``url`` is the public API, else
``{url}/token`` (a proxy or a test double serves both under one host). The access token is
kept until a minute before it runs out and renewed once on a 401; a refused grant or a second
401 is a :class:`FatalError`. 403 ``rateLimitExceeded``/``userRateLimitExceeded`` and 429 are
waited out (``Retry-After``, else the "Retry after <time>" Gmail writes in the message, else
backoff); 5xx are retried; a malformed page is a :class:`RetriableError`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests

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
from connectors.http import Http
from connectors.mail import Agents, Mail, Threads, mail_from_headers
from connectors.oauth import AccessToken

API = "https://gmail.googleapis.com"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
           "Auto-Submitted", "Precedence", "X-Autoreply", "List-Id")  # fmt: skip
HISTORY_TYPES = ("messageAdded", "labelAdded", "labelRemoved")
PAGE = 500  # the documented maximum of messages.list and history.list
CHUNK = 500  # changes per Batch
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
RETRY_AT = re.compile(r"Retry after (\d{4}-\d\d-\d\dT[\d:.]+Z)")
MAX_PAGES = 100_000  # a loop guard
BEFORE = dt.timedelta(seconds=1)  # a label change dated by the next message: this before it


def _error_reasons(response: requests.Response) -> set[str]:
    try:
        errors = response.json()["error"]["errors"]
        return {str(e.get("reason")) for e in errors if isinstance(e, dict)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return set()


def _rate_limited(response: requests.Response) -> bool:
    """Gmail's 403 for a spent quota (429 is a rate limit anyway)."""
    return response.status_code == 403 and bool(_error_reasons(response) & RATE_REASONS)


def _retry_in_message(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """``User-rate limit exceeded.  Retry after 2020-01-21T12:57:51.196Z``: the time to
    retry written in the message, as a Retry-After header for Http."""
    if response.status_code not in (403, 429) or "Retry-After" in response.headers:
        return
    found = RETRY_AT.search(response.text[:2000])
    if found is None:
        return
    try:
        when = dt.datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
    except ValueError:
        return
    response.headers["Retry-After"] = str(max(0, int(when.timestamp() - time.time()) + 1))


def token_url(base: str) -> str:
    """Google's token endpoint for the public API, else ``{url}/token``."""
    return GOOGLE_TOKEN if base == API else f"{base}/token"


@register
class GmailConnector(Connector):
    """Gmail; see the module's docstring."""

    type = "gmail"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        page: int = PAGE,
    ) -> None:
        super().__init__(name, options)
        self.base = str(options.get("url") or API).rstrip("/")
        self.client_id = str(options.get("client_id") or "")
        self.client_secret = str(options.get("client_secret") or "")
        self.refresh_token = str(options.get("refresh_token") or "")
        if not (self.client_id and self.client_secret and self.refresh_token):
            raise FatalError("gmail: give client_id, client_secret and refresh_token")
        self.user = str(options.get("user") or "me")
        self.agents = Agents(options.get("agents") or ())
        self.solved_label = options.get("solved_label") or None
        self.pending_on_reply = bool(options.get("pending_on_reply"))
        self._clock, self.page = clock, page
        self.start = start_of(options, "gmail", clock())
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }
        self.token = AccessToken(
            "gmail",
            token_url(self.base),
            form,
            client=f"client {self.client_id}",
            advice="check the grant and its scope, or authorize slamon again",
            monotonic=monotonic,
        )

    @property
    def users(self) -> str:
        return f"/gmail/v1/users/{self.user}"

    def _json(self, http: Http, path: str, params: Any = None) -> dict[str, Any]:
        response = self.token.get(http, path, params)
        body: dict[str, Any] = http.decode(response, path, dict)
        return body

    def _http(self, stop: threading.Event) -> Http:
        http = Http(
            "gmail",
            self.base,
            stop,
            throttled=_rate_limited,
            secrets=[self.client_secret, self.refresh_token, self.token.value or ""],
        )
        http.session.hooks["response"].append(_retry_in_message)
        return http

    # -- the sync ------------------------------------------------------------------------

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = self._http(stop)
        state = cursor or {}
        profile = self._json(http, f"{self.users}/profile")
        if not isinstance(profile.get("historyId"), str | int):
            raise RetriableError("gmail: a malformed answer from /profile")
        queue = str(profile.get("emailAddress") or self.user)
        threads = Threads(self.agents, queue=queue, pending_on_reply=self.pending_on_reply,
                          state=state.get("threads"))  # fmt: skip
        solved = self._solved_label(http)
        skipped: Counter[str] = Counter()
        notes: list[str] = []
        history = state.get("history")
        if history:
            walk = self._history(http, str(history), solved, skipped)
            if walk is not None:
                records, newest = walk
                changes = self._apply(records, threads, solved)
                yield from self._batches(changes, threads, newest, skipped, notes)
                return
            notes.append("gmail: the stored historyId has expired; synced the mailbox again")
        mails = self._listing(http, solved, skipped, stop)
        timeline = []
        for mail, labels in sorted(mails, key=lambda m: (m[0].at, m[0].key)):
            timeline.append(("add", mail, labels))
            if solved and solved in labels:
                timeline.append(("labelled", mail, labels))
        changes = self._apply(timeline, threads, solved, first=True)
        yield from self._batches(changes, threads, str(profile["historyId"]), skipped, notes)

    def _batches(
        self,
        changes: list[TicketChange],
        threads: Threads,
        history: str | None,
        skipped: Counter[str],
        notes: list[str],
    ) -> Iterator[Batch]:
        """The changes in chunks; only the last one's cursor moves the history on."""
        notes = notes + [f"gmail: skipped {n} message(s): {why}" for why, n in skipped.items()]
        chunks = [changes[i : i + CHUNK] for i in range(0, len(changes), CHUNK)] or [[]]
        for n, chunk in enumerate(chunks, start=1):
            last = n == len(chunks)
            cursor: dict[str, Any] = {"threads": json.loads(json.dumps(threads.dump()))}
            cursor["history"] = history if last else None
            yield Batch(chunk, cursor, newest=self._clock() if last else None, done=last,
                        notes=tuple(notes) if last else ())  # fmt: skip

    def _solved_label(self, http: Http) -> str | None:
        """The solved label's id (the config names it or gives its id)."""
        if not self.solved_label:
            return None
        wanted = str(self.solved_label)
        body = self._json(http, f"{self.users}/labels")
        labels = body.get("labels")
        if not isinstance(labels, list):
            raise RetriableError("gmail: a malformed answer from /labels")
        for label in labels:
            if isinstance(label, dict) and (
                label.get("id") == wanted or str(label.get("name", "")).lower() == wanted.lower()
            ):
                return str(label["id"])
        raise FatalError(f"gmail: no label {wanted!r} in the mailbox (solved_label)")

    # -- reading -------------------------------------------------------------------------

    def _listing(
        self, http: Http, solved: str | None, skipped: Counter[str], stop: threading.Event
    ) -> list[tuple[Mail, frozenset[str]]]:
        """Every message since ``start`` in the inbox, the sent mail and the solved label."""
        found: dict[str, tuple[Mail, frozenset[str]]] = {}
        for label in ("INBOX", "SENT", *([solved] if solved else [])):
            token: str | None = None
            for _ in range(MAX_PAGES):
                params: dict[str, Any] = {"labelIds": label, "maxResults": self.page}
                if token:
                    params["pageToken"] = token
                body = self._json(http, f"{self.users}/messages", params)
                listed = body.get("messages", [])
                token = body.get("nextPageToken")
                if not isinstance(listed, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("id"), str) for m in listed
                ) or not isinstance(token, str | None):  # fmt: skip
                    raise RetriableError("gmail: a malformed page from /messages")
                recent = False
                for item in listed:
                    if item["id"] in found:
                        recent = recent or found[item["id"]][0].at >= self.start
                        continue
                    read = self._message(http, item["id"], skipped)
                    if read is None:
                        continue
                    if read[0].at >= self.start:
                        found[item["id"]] = read
                        recent = True
                if not token or (listed and not recent) or stop.is_set():
                    break
        return list(found.values())

    def _message(
        self, http: Http, mid: str, skipped: Counter[str]
    ) -> tuple[Mail, frozenset[str]] | None:
        """One message's headers, or None (gone since it was listed, or unreadable)."""
        path = f"{self.users}/messages/{mid}"
        params = [("format", "metadata"), *(("metadataHeaders", h) for h in HEADERS)]
        response = self.token.get(http, path, params, allow=(404,))
        if response.status_code == 404:
            return None
        message = http.decode(response, "/messages/{id}", dict)
        try:
            labels = frozenset(str(label) for label in message.get("labelIds") or ())
            received = dt.datetime.fromtimestamp(int(message["internalDate"]) / 1000, dt.UTC)
            headers = message.get("payload", {}).get("headers") or []
            pairs = [(str(h["name"]), str(h.get("value", ""))) for h in headers]
            thread = str(message["threadId"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            skipped["not as documented (id, threadId, internalDate, payload.headers)"] += 1
            return None
        mail = mail_from_headers(mid, pairs, received, sent="SENT" in labels, thread_hint=thread)
        return mail, labels

    def _history(
        self, http: Http, start: str, solved: str | None, skipped: Counter[str]
    ) -> tuple[list[tuple[str, Mail, frozenset[str]]], str] | None:
        """What changed since ``start``, in order, and the history id after it; None when
        ``start`` has expired (a full resync is due)."""
        path = f"{self.users}/history"
        events: list[tuple[str, str, str]] = []  # (what, message id, thread id)
        token: str | None = None
        newest = start
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"startHistoryId": start, "historyTypes": HISTORY_TYPES,
                                      "maxResults": self.page}  # fmt: skip
            if token:
                params["pageToken"] = token
            response = self.token.get(http, path, params, allow=(404,))
            if response.status_code == 404:
                return None
            body = http.decode(response, path, dict)
            records, token = body.get("history", []), body.get("nextPageToken")
            if not isinstance(records, list) or not isinstance(body.get("historyId"), str | int):
                raise RetriableError(f"gmail: a malformed page from {path}")
            newest = str(body["historyId"])
            for record in records:
                events += _record_events(record, solved)
            if not token:
                break
        timeline: list[tuple[str, Mail, frozenset[str]]] = []
        read: dict[str, tuple[Mail, frozenset[str]] | None] = {}
        for what, mid, thread in events:
            if what == "add":
                if mid not in read:
                    read[mid] = self._message(http, mid, skipped)
                got = read[mid]
                if got is not None:
                    timeline.append(("add", *got))
                    if solved and solved in got[1]:
                        timeline.append(("labelled", *got))
            else:
                timeline.append((what, _stub(mid, thread, self._clock()), frozenset()))
        return timeline, newest

    # -- threading -----------------------------------------------------------------------

    def _apply(
        self,
        timeline: list[tuple[str, Mail, frozenset[str]]],
        threads: Threads,
        solved: str | None,
        first: bool = False,
    ) -> list[TicketChange]:
        """The changes a timeline makes. A label change is dated by the poll, or a second
        before the next message arriving after it, whichever is earlier, yet never before
        its thread's last message (first sync: by its message)."""
        now = self._clock()
        kept = {"INBOX", "SENT", *([solved] if solved else [])}
        changes: list[TicketChange] = []
        passed: set[str] = set()
        for n, (what, mail, labels) in enumerate(timeline):
            if what == "add":
                if not labels & kept or mail.message_id in threads.ids:
                    passed.add(mail.key)  # a draft, spam, trash, or a message threaded before
                    continue
                changes.append(threads.add(mail))
                continue
            if what == "labelled":  # a new message that carries the label already
                if mail.key in passed:
                    continue
                what = "solved"
            ticket = threads.ticket_for(mail)
            if ticket is None:
                continue
            if first:
                at = mail.at
            else:  # before the next message arriving, not before the last one
                later = (m.at - BEFORE for w, m, _ in timeline[n + 1 :] if w == "add")
                last = dt.datetime.fromtimestamp(float(threads.threads[ticket][2]), dt.UTC)
                at = max(min(now, next(later, now)), last)
            if what == "open" and threads.threads[ticket][0] != "solved":
                continue
            change = threads.mark(ticket, what, at)
            if change is not None:
                changes.append(change)
        return changes


def _record_events(record: Any, solved: str | None) -> list[tuple[str, str, str]]:
    """A history record as (what, message id, thread id): ``add``, ``solved``, ``open``."""
    out: list[tuple[str, str, str]] = []
    if not isinstance(record, dict):
        return out
    for key, what in (("messagesAdded", "add"), ("labelsAdded", "solved"),
                      ("labelsRemoved", "open")):  # fmt: skip
        for entry in record.get(key) or ():
            message = entry.get("message") if isinstance(entry, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                continue
            if what != "add" and (not solved or solved not in (entry.get("labelIds") or ())):
                continue
            out.append((what, message["id"], str(message.get("threadId") or "")))
    return out


def _stub(mid: str, thread: str, at: dt.datetime) -> Mail:
    """A message known only by its ids (a label change): enough to find its thread."""
    return Mail(key=mid, message_id="", parents=(), subject="", sender="", recipients=(),
                at=at, automatic=False, thread_hint=thread or None)  # fmt: skip
