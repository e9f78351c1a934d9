"""The ``bitrix24`` connector: a Bitrix24 portal's Open Lines sessions (chats and
messengers), CRM e-mail and missed calls (HELPDESK-APIS.md, "Bitrix24 REST API").

A sync reads the lines, then its parts, each yielding one Batch a page whose cursor resumes
it: sessions (:mod:`connectors.bitrix24_sessions`), CRM e-mail
(:mod:`connectors.bitrix24_mail`, ``emails``), missed calls (:mod:`connectors.bitrix24_calls`,
``calls``). Lines with CRM integration off create no activities: each sync names them.
With OAuth the cursor keeps the rotated refresh token under ``refresh_token``
(``cursor_secrets``: the monitor shows it as ``***``).

Options: ``url`` (the inbound-webhook URL; its path holds a secret), or the portal URL with
``client_id`` + ``client_secret`` + ``refresh_token``; ``lines``, ``calls``, ``emails``,
``start``, ``webhook_secret``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
from connectors.bitrix24_calls import calls
from connectors.bitrix24_client import (
    BURST,
    LINES,
    LIST,
    OAUTH_SERVER,
    PAGE,
    RATE,
    SELECT,
    MethodPaused,
    Portal,
    rows,
)
from connectors.bitrix24_mail import mail_changes, mails
from connectors.bitrix24_mapping import OVERLAP, began_at, instant, portal_filter_time
from connectors.bitrix24_policies import suggested_policies
from connectors.bitrix24_sessions import session_changes, sessions

TOKEN = "refresh_token"  # the cursor's key for the rotated OAuth refresh token (a secret)


@register
class Bitrix24Connector(Connector):
    """Bitrix24; see the module's docstring."""

    type = "bitrix24"
    cursor_secrets = (TOKEN,)

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        rate: float = RATE,
        burst: float = BURST,
        oauth_url: str | None = None,
        batched: bool = True,
    ) -> None:
        super().__init__(name, options)
        url = str(options.get("url") or "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FatalError("bitrix24: url must be the portal's webhook or portal URL")
        self.portal = f"{parts.scheme}://{parts.netloc}"
        oauth = [options.get(k) for k in ("client_id", "client_secret", "refresh_token")]
        if all(oauth):
            self.oauth: dict[str, str] | None = {
                "client_id": str(oauth[0]), "client_secret": str(oauth[1]),
                "refresh_token": str(oauth[2]),
            }  # fmt: skip
            self.base = f"{self.portal}/rest"
            self.secrets = [str(oauth[1]), str(oauth[2])]
        else:
            path = parts.path.strip("/").split("/")
            if len(path) < 3 or path[0] != "rest" or not path[1].isdigit():
                raise FatalError("bitrix24: url must be https://PORTAL/rest/USER_ID/CODE/")
            self.oauth = None
            self.base = f"{self.portal}/rest/{path[1]}/{path[2]}"
            self.secrets = [path[2]]
        lines = options.get("lines")
        self.lines = {str(x) for x in lines} if lines else None
        self.calls = options.get("calls", True) is not False
        self.emails = options.get("emails", True) is not False
        secret = options.get("webhook_secret")
        self.webhook_secret = str(secret) if secret else None
        self._clock = clock
        self.start = start_of(options, "bitrix24", clock())
        self.oauth_url = str(oauth_url or options.get("oauth_url") or OAUTH_SERVER)
        self.rate, self.burst, self.batched = rate, burst, batched
        self._line_names: dict[str, str] = {}
        self.last: Portal | None = None  # the last sync's connection (tests read its counts)
        self._token: str | None = None  # the refresh token after this process's last refresh

    def ticket_url(self, ticket: str) -> str:
        if ticket.startswith("call"):
            return f"{self.portal}/telephony/detail.php"
        return f"{self.portal}/crm/activity/?open_view={ticket.removeprefix('mail')}"

    # -- sync ----------------------------------------------------------------------------

    def _connect(self, stop: threading.Event, cursor: Cursor | None) -> Portal:
        oauth = dict(self.oauth) if self.oauth else None
        kept = (cursor or {}).get(TOKEN)
        if oauth is not None:  # the newest refresh token: this process's, the cursor's, the config
            oauth["refresh_token"] = self._token or (kept if isinstance(kept, str) and kept
                                                     else oauth["refresh_token"])  # fmt: skip
        portal = Portal(self.base, stop, self.secrets, oauth, self.oauth_url, self.rate, self.burst)
        self.last = portal
        return portal

    def _position(self, state: dict[str, Any], portal: Portal) -> Cursor:
        """The cursor: the walk's state and, with OAuth, the refresh token now valid (the
        portal rotates it on each refresh). The monitor shows the key as ``***``."""
        cursor = dict(state)
        if portal.oauth is not None:
            self._token = cursor[TOKEN] = portal.oauth["refresh_token"]
        return cursor

    def secrets_in_use(self) -> list[str]:
        """Every secret this connector holds now, rotated tokens included (the monitor's
        redactor keeps them out of what it logs and shows)."""
        current = [*self.secrets, self._token or ""]
        if self.last is not None:
            current += [self.last.access, *(self.last.oauth or {}).values()]
        return [s for s in current if s and s != (self.oauth or {}).get("client_id")]

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        portal = self._connect(stop, cursor)
        state: dict[str, Any] = {k: v for k, v in (cursor or {}).items()
                                 if k not in (TOKEN, "token")}  # fmt: skip
        notes: list[str] = []
        self._read_lines(portal, notes)
        parts = [("sessions", partial(sessions, self))]
        parts += [("e-mail", partial(mails, self))] if self.emails else []
        parts += [("calls", partial(calls, self))] if self.calls else []
        for what, part in parts:
            try:
                for changes in part(portal, state, notes):
                    yield Batch(changes, self._position(state, portal), newest=_newest(changes))
            except MethodPaused as exc:
                notes.append(f"bitrix24: {what} wait: {exc.method} is over its operation time"
                             " limit; they follow once it resets")  # fmt: skip
            if stop.is_set():
                return
        if portal.limited:
            notes.append(f"bitrix24: the portal refused {portal.limited} requests as too many")
        yield Batch([], self._position(state, portal), newest=self._clock(), done=True,
                    notes=tuple(notes))  # fmt: skip

    def _read_lines(self, portal: Portal, notes: list[str]) -> None:
        try:
            found = self._all_lines(portal)
        except MethodPaused:
            return  # the names known from before do
        self._line_names = {str(x.get("ID")): str(x.get("LINE_NAME") or x.get("ID")) for x in found}
        off = [x for x in found if str(x.get("CRM")) != "Y" and self._watched(str(x.get("ID")))]
        if off:
            named = ", ".join(f"{x.get('LINE_NAME')!r} (id {x.get('ID')})" for x in off)
            notes.append(f"bitrix24: not watched: Open Lines with CRM integration off create no"
                         f" CRM activity, so their sessions cannot be read: {named}")  # fmt: skip

    def _all_lines(self, portal: Portal) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            params = {"PARAMS": {"limit": 200, "offset": len(found)}}
            page = rows(portal.call(LINES, params)["result"], LINES)
            found += page
            if len(page) < 200:
                return found

    def suggest_policies(self, cursor: Cursor | None = None) -> str:
        """Each watched Open Line's KPIs and working time as ``calendars:`` and
        ``policies:`` YAML (see :mod:`connectors.bitrix24_policies`), read with the stored
        cursor's refresh token where there is one. An unreachable portal raises (after one
        retry: a person is waiting)."""
        portal = self._connect(threading.Event(), cursor)
        portal.http.attempts = 2
        lines = [x for x in self._all_lines(portal) if self._watched(str(x.get("ID")))]
        if portal.oauth is not None:
            self._token = portal.oauth["refresh_token"]
        return suggested_policies(self.name, lines, self._clock().date())

    def cursor_secrets_now(self) -> dict[str, str]:
        return {TOKEN: self._token} if self._token else {}

    def _watched(self, line: str) -> bool:
        return self.lines is None or line in self.lines

    # -- shared by the parts ------------------------------------------------------------

    def _walk(
        self, portal: Portal, state: dict[str, Any], key: str, kind: Mapping[str, Any]
    ) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Pages of activities changed since the last walk began (by ID, ``start=-1``),
        each with the position to keep in ``state[key]`` once it is handled."""
        mine = state.get(key) or {}
        since = mine.get("since") or portal_filter_time(self.start)
        after, began = int(mine.get("after") or 0), mine.get("began")
        while True:
            params = {"filter": {**kind, ">=LAST_UPDATED": since, ">ID": after},
                      "order": {"ID": "ASC"}, "select": SELECT, "start": -1}  # fmt: skip
            answer = portal.call(LIST, params)
            if began is None:
                began = began_at(answer, self._clock())
            page = rows(answer["result"], LIST)
            full = len(page) >= PAGE
            if page:
                after = max(after, *(int(a["ID"]) for a in page))
            if full:
                position = {"since": since, "after": after, "began": began}
            else:
                position = {"since": portal_filter_time(instant(began) - OVERLAP)}
            yield page, position
            if not full:
                return

    def _run(
        self, portal: Portal, commands: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        if self.batched:
            return portal.batch(commands)
        results, failed = {}, {}
        for key, (method, params) in commands.items():
            try:
                results[key] = portal.call(method, params)["result"]
            except RetriableError as exc:
                if isinstance(exc, MethodPaused) or exc.status is None:
                    raise
                failed[key] = str(exc)
        return results, failed

    # -- webhooks --------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Bitrix24 signs nothing: an event is genuine when its
        ``auth[application_token]`` is the configured ``webhook_secret``."""
        if not self.webhook_secret:
            return False
        token = _form(body).get("auth[application_token]", "")
        return hmac.compare_digest(token.encode(), self.webhook_secret.encode())

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The activity an ONCRMACTIVITYADD/UPDATE event names (a session or a mail, read
        again at once). A deletion or a call names none, so an incremental sync runs (its
        reconciliation finds deleted sessions)."""
        form = _form(body)
        event = form.get("event", "").upper()
        activity = form.get("data[FIELDS][ID]", "")
        if event in ("ONCRMACTIVITYADD", "ONCRMACTIVITYUPDATE") and activity.isdigit():
            return (activity,)
        return ()

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        ids = [t for t in tickets if t.isdigit()]
        if not ids:
            return
        portal = self._connect(stop, None)
        if not self._line_names:
            self._read_lines(portal, [])
        notes: list[str] = []
        params = {"filter": {"@ID": ids}, "select": SELECT, "start": -1}
        found = rows(portal.call(LIST, params)["result"], LIST)
        yield from session_changes(self, portal, found, notes)
        if self.emails:
            yield from mail_changes(self, portal, found, notes)


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    except ValueError:
        return {}


def _newest(changes: Sequence[TicketChange]) -> dt.datetime | None:
    return max((c.updated_at for c in changes if c.updated_at is not None), default=None)
