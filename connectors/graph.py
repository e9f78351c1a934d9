"""The ``graph`` connector: one mailbox through Microsoft Graph v1.0 mail, headers only
(HELPDESK-APIS.md, "MICROSOFT GRAPH v1.0 MAIL"). Application permission:
``Mail.ReadBasic.All`` (least privilege) or ``Mail.Read``; restrict it to the support
mailbox with an application access policy.

Each poll walks the message delta of ``inbox``, ``sentitems`` and, when configured, the
``solved_folder`` (a well-known name, or a top-level folder's display name or id):
``GET /v1.0/users/{mailbox}/mailFolders/{folder}/messages/delta`` with ``$select`` and
``Prefer: odata.maxpagesize=N`` on the first request, then the stored ``@odata.deltaLink``;
``@odata.nextLink`` is followed to the page with the new deltaLink. Every request sends
``Prefer: IdType="ImmutableId"`` so a message keeps its id when it moves. Every folder is
read to the end before anything is delivered: a failure anywhere leaves the stored links as
they were, and the next poll asks again (Graph replays changes; messages already threaded
are recognised by Message-ID and skipped).

Partial updates (``id, isRead, parentFolderId`` only) are merged into what the same round
said of the message, never replacing it; a message still without its ids and times is
skipped and counted. ``@removed`` from the solved folder reopens a solved thread. A message
that appears in the solved folder solves its thread as of its ``lastModifiedDateTime`` (the
move), bounded by the poll's time and the thread's last message. A 410, or a
``syncStateNotFound``/``resyncRequired`` code (any case), restarts that folder's delta from
the beginning. Sent Items have no ``internetMessageHeaders`` in Graph: all messages thread
by ``conversationId``. The first round reaches back to ``start`` by ``receivedDateTime``.

Auth: client credentials at ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``
when ``url`` is the public API, else ``{url}/{tenant}/oauth2/v2.0/token``; the token is kept
until a minute before it runs out and renewed once on a 401. 429 and 503 are waited out
(``Retry-After``), 5xx retried, a malformed page is a :class:`RetriableError`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
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

API = "https://graph.microsoft.com"
LOGIN = "https://login.microsoftonline.com"
SCOPE = "https://graph.microsoft.com/.default"
SELECT = ("id,internetMessageId,conversationId,subject,from,sender,toRecipients,ccRecipients,"
          "receivedDateTime,sentDateTime,internetMessageHeaders,parentFolderId,"
          "lastModifiedDateTime")  # fmt: skip
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired"})
PAGE = 100
CHUNK = 500
MAX_PAGES = 100_000  # a loop guard
MAX_KNOWN = 50_000  # message ids remembered (their thread) for moves out of the solved folder
WELL_KNOWN = frozenset({"inbox", "sentitems", "deleteditems", "drafts", "junkemail", "archive",
                        "outbox", "clutter", "msgfolderroot", "scheduled"})  # fmt: skip


def token_url(base: str, tenant: str) -> str:
    """Microsoft's login endpoint for the public API, else one under ``url``."""
    root = LOGIN if base == API else base
    return f"{root}/{tenant}/oauth2/v2.0/token"


class _Resync(Exception):
    """The folder's delta state is gone: start it again."""


@register
class GraphConnector(Connector):
    """Microsoft Graph mail; see the module's docstring."""

    type = "graph"

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
        self.tenant = str(options.get("tenant_id") or "")
        self.client_id = str(options.get("client_id") or "")
        self.client_secret = str(options.get("client_secret") or "")
        self.mailbox = str(options.get("mailbox") or "")
        if not (self.tenant and self.client_id and self.client_secret and self.mailbox):
            raise FatalError("graph: give tenant_id, client_id, client_secret and mailbox")
        self.agents = Agents(options.get("agents") or ())
        self.solved_folder = options.get("solved_folder") or None
        self.pending_on_reply = bool(options.get("pending_on_reply"))
        self._clock, self.page = clock, page
        self.start = start_of(options, "graph", clock())
        form = {
            "client_id": self.client_id,
            "scope": SCOPE,
            "client_secret": self.client_secret,
            "grant_type": "client_credentials",
        }
        self.token = AccessToken(
            "graph",
            token_url(self.base, self.tenant),
            form,
            client=f"client {self.client_id} of tenant {self.tenant}",
            advice="check the app registration, its secret and its permissions",
            monotonic=monotonic,
        )

    @property
    def user(self) -> str:
        return f"/v1.0/users/{self.mailbox}"

    def _get(
        self, http: Http, path: str, params: Any = None, prefer: str = ""
    ) -> requests.Response:
        """A GET with the access token (renewed once when refused); the response, or the
        delta's "start again" answers as :class:`_Resync`."""
        prefers = {"Prefer": ", ".join(p for p in (prefer, 'IdType="ImmutableId"') if p)}
        response = self.token.get(http, path, params, allow=(400, 404, 410), headers=prefers)
        status = response.status_code
        if status in (400, 404, 410):
            code = _code(response)
            if status == 410 or code.lower() in RESYNC_CODES:
                raise _Resync(code or "HTTP 410")
            if status == 404:
                raise FatalError(
                    f"graph: {http.where(path)} not found (HTTP 404 {code}); "
                    "check mailbox and solved_folder"
                )
            raise RetriableError(f"graph: HTTP 400 {code} from {http.where(path)}", status=400)
        return response

    def _http(self, stop: threading.Event) -> Http:
        return Http("graph", self.base, stop, secrets=[self.client_secret, self.token.value or ""])

    # -- the sync ------------------------------------------------------------------------

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = self._http(stop)
        state = cursor or {}
        threads = Threads(self.agents, queue=self.mailbox, pending_on_reply=self.pending_on_reply,
                          state=state.get("threads"))  # fmt: skip
        # message id -> [conversationId, whether it was last seen in the solved folder]
        known: dict[str, list[Any]] = {k: list(v) for k, v in state.get("known", {}).items()}
        links: dict[str, str] = dict(state.get("delta", {}))
        folders = {"inbox": "inbox", "sentitems": "sentitems"}
        if self.solved_folder:
            folders["solved"] = self._folder(http, str(self.solved_folder))
        skipped: Counter[str] = Counter()
        notes: list[str] = []
        rounds: dict[str, tuple[dict[str, dict[str, Any]], list[str]]] = {}
        for key, folder in folders.items():
            link = links.get(key)
            if link is not None and not link.startswith(self.base + "/"):
                link = None  # a link to another host is never followed with the token
            try:
                rounds[key], links[key] = self._walk(http, folder, link)
            except _Resync as exc:
                notes.append(f"graph: the {key} delta had to start again ({exc})")
                rounds[key], links[key] = self._walk(http, folder, None)
        changes = self._apply(rounds, threads, known, skipped)
        notes += [f"graph: skipped {n} message(s): {why}" for why, n in skipped.items()]
        chunks = [changes[i : i + CHUNK] for i in range(0, len(changes), CHUNK)] or [[]]
        for n, chunk in enumerate(chunks, start=1):
            last = n == len(chunks)
            state_now = {"threads": threads.dump(), "known": known}
            cursor_out = json.loads(json.dumps(state_now))
            cursor_out["delta"] = links if last else dict(state.get("delta", {}))
            yield Batch(chunk, cursor_out, newest=self._clock() if last else None, done=last,
                        notes=tuple(notes) if last else ())  # fmt: skip

    def _folder(self, http: Http, wanted: str) -> str:
        """The solved folder: a well-known name, or a top-level folder's name or id."""
        if wanted.lower() in WELL_KNOWN:
            return wanted.lower()
        path: str | None = f"{self.user}/mailFolders"
        for _ in range(MAX_PAGES):
            if path is None:
                break
            body = http.decode(self._get(http, path), "/mailFolders", dict)
            folders = body.get("value")
            if not isinstance(folders, list):
                raise RetriableError("graph: a malformed answer from /mailFolders")
            for folder in folders:
                if isinstance(folder, dict) and (
                    folder.get("id") == wanted
                    or str(folder.get("displayName", "")).lower() == wanted.lower()
                ):
                    return str(folder["id"])
            path = body.get("@odata.nextLink")
        raise FatalError(f"graph: no mail folder {wanted!r} in {self.mailbox} (solved_folder)")

    def _walk(
        self, http: Http, folder: str, link: str | None
    ) -> tuple[tuple[dict[str, dict[str, Any]], list[str]], str]:
        """One folder's changes since ``link`` (None: everything): messages by id, merged,
        the removed ids, and the new deltaLink."""
        items: dict[str, dict[str, Any]] = {}
        removed: list[str] = []
        if link is None:
            path = f"{self.user}/mailFolders/{folder}/messages/delta"
            params: Any = {"$select": SELECT}
        else:
            path, params = link, None
        for _ in range(MAX_PAGES):
            response = self._get(http, path, params, prefer=f"odata.maxpagesize={self.page}")
            body = http.decode(response, "/messages/delta", dict)
            value = body.get("value")
            following, delta = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
            if not isinstance(value, list) or not isinstance(following or delta, str):
                raise RetriableError("graph: a malformed page from /messages/delta")
            for item in value:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    continue
                if "@removed" in item:
                    removed.append(item["id"])
                    items.pop(item["id"], None)
                else:  # upsert-merge: a partial update never replaces what is known
                    items.setdefault(item["id"], {}).update(item)
            if isinstance(delta, str) and not following:
                return (items, removed), delta
            path, params = str(following), None
        raise RetriableError("graph: the delta never ended")

    # -- threading -----------------------------------------------------------------------

    def _apply(
        self,
        rounds: Mapping[str, tuple[dict[str, dict[str, Any]], list[str]]],
        threads: Threads,
        known: dict[str, list[Any]],
        skipped: Counter[str],
    ) -> list[TicketChange]:
        now = self._clock()
        timeline: list[tuple[dt.datetime, int, str, Mail]] = []
        for key, (items, removed) in rounds.items():
            for gid, item in items.items():
                if gid in known and "conversationId" not in item:
                    continue  # an update (read, flagged) of a message already threaded
                mail = self._mail(item, key == "sentitems", skipped)
                if mail is None or (mail.at < self.start and gid not in known):
                    continue
                timeline.append((mail.at, 0, "add", mail))
                if key == "solved" and not (gid in known and known[gid][1]):
                    moved = _instant(item.get("lastModifiedDateTime")) or now
                    timeline.append((min(max(moved, mail.at), now), 1, "solved", mail))
            if key == "solved":
                for gid in removed:
                    if gid in known and known[gid][1]:
                        known[gid][1] = False
                        timeline.append((now, 1, "open", _stub(gid, known[gid][0], now)))
        changes: list[TicketChange] = []
        for at, _, what, mail in sorted(timeline, key=lambda t: (t[0], t[1], t[3].key)):
            if what == "add":
                was = known.pop(mail.key, [None, False])
                known[mail.key] = [mail.thread_hint or "", bool(was[1])]
                if mail.message_id not in threads.ids:
                    changes.append(threads.add(mail))
                continue
            if what == "solved":
                known[mail.key][1] = True
            ticket = threads.ticket_for(mail)
            if ticket is None:
                continue
            if what == "open" and threads.threads[ticket][0] != "solved":
                continue
            last = dt.datetime.fromtimestamp(float(threads.threads[ticket][2]), dt.UTC)
            change = threads.mark(ticket, what, max(at, last))
            if change is not None:
                changes.append(change)
        for gid in list(known)[: max(0, len(known) - MAX_KNOWN)]:
            del known[gid]
        return changes

    def _mail(self, item: Mapping[str, Any], sent: bool, skipped: Counter[str]) -> Mail | None:
        received = _instant(item.get("receivedDateTime")) or _instant(item.get("sentDateTime"))
        conversation = item.get("conversationId")
        if received is None or not isinstance(conversation, str):
            skipped["no receivedDateTime or conversationId (a partial update)"] += 1
            return None
        try:
            pairs = [("From", _address(item.get("from") or item.get("sender"))),
                     ("To", ", ".join(_address(r) for r in item.get("toRecipients") or ())),
                     ("Cc", ", ".join(_address(r) for r in item.get("ccRecipients") or ())),
                     ("Subject", str(item.get("subject") or "")),
                     ("Message-ID", str(item.get("internetMessageId") or ""))]  # fmt: skip
            sent_at = _instant(item.get("sentDateTime"))
            if sent_at is not None:
                pairs.append(("Date", email.utils.format_datetime(sent_at)))
            pairs += [(str(h["name"]), str(h.get("value", "")))
                      for h in item.get("internetMessageHeaders") or ()]  # fmt: skip
        except (KeyError, TypeError, AttributeError):
            skipped["not as documented (from, recipients, internetMessageHeaders)"] += 1
            return None
        return mail_from_headers(str(item["id"]), pairs, received, sent=sent,
                                 thread_hint=conversation)  # fmt: skip


def _address(value: Any) -> str:
    """``{"emailAddress":{"name","address"}}`` as an RFC 5322 address."""
    if not isinstance(value, dict):
        return ""
    inner = value.get("emailAddress") or {}
    return email.utils.formataddr((str(inner.get("name") or ""), str(inner.get("address") or "")))


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _stub(gid: str, conversation: str, at: dt.datetime) -> Mail:
    return Mail(key=gid, message_id="", parents=(), subject="", sender="", recipients=(),
                at=at, automatic=False, thread_hint=conversation or None)  # fmt: skip


def _code(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["code"])[:60]
    except (ValueError, KeyError, TypeError):
        return ""
