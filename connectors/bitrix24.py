"""The ``bitrix24`` connector: a Bitrix24 portal's Open Lines sessions (chats and
messengers), CRM e-mail and missed calls (HELPDESK-APIS.md, "Bitrix24 REST API").

No REST method lists Open Lines sessions, so a sync walks the CRM activities whose
``PROVIDER_ID`` is ``IMOPENLINES_SESSION`` changed since the last walk began (by
``LAST_UPDATED`` with an overlap, the fast ``start=-1`` walk by ID), reads their histories
with ``imopenlines.session.history.get`` 50 to a ``batch``, then re-reads the history of
every session still open (a chat message does not move ``LAST_UPDATED``). Sessions known
open that are no longer listed anywhere were deleted. Each page is one Batch whose cursor
resumes the walk; a repeat of a session is harmless (its events keep their ids).

CRM e-mail (``emails``) walks ``CRM_EMAIL`` activities the same way and re-reads the
threads of their CRM owners; missed calls (``calls``) walk ``voximplant.statistic.get`` by
ID. Lines with CRM integration off create no activities: each sync names them in its notes.

Options: ``url`` (the inbound-webhook URL; its path holds a secret), or the portal URL with
``client_id`` + ``client_secret`` + ``refresh_token``; ``lines``, ``calls``, ``emails``,
``start``, ``webhook_secret``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connectors.base import (
    Batch,
    Connector,
    Cursor,
    FatalError,
    RetriableError,
    TicketChange,
    aware,
    register,
    utc_now,
)
from connectors.bitrix24_client import (
    BURST,
    OAUTH_SERVER,
    PAGE,
    RATE,
    MethodPaused,
    Portal,
    rows,
    seal,
    unseal,
)
from connectors.bitrix24_mapping import (
    call_changes,
    email_change,
    email_threads,
    instant,
    portal_filter_time,
    removed,
    session_change,
)

SESSION, EMAIL = "IMOPENLINES_SESSION", "CRM_EMAIL"
LIST, HISTORY = "crm.activity.list", "imopenlines.session.history.get"
LINES, CALLS = "imopenlines.config.list.get", "voximplant.statistic.get"
SELECT = ["ID", "OWNER_TYPE_ID", "OWNER_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID",
          "ASSOCIATED_ENTITY_ID", "ORIGIN_ID", "SUBJECT", "CREATED", "LAST_UPDATED",
          "START_TIME", "END_TIME", "COMPLETED", "DIRECTION", "RESPONSIBLE_ID",
          "RESULT_STATUS", "RESULT_SOURCE_ID", "PROVIDER_PARAMS", "COMMUNICATIONS"]  # fmt: skip
OVERLAP = dt.timedelta(seconds=60)  # LAST_UPDATED has whole seconds; clocks drift
START_BACK = dt.timedelta(days=30)


@register
class Bitrix24Connector(Connector):
    """Bitrix24; see the module's docstring."""

    type = "bitrix24"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        rate: float = RATE,
        burst: float = BURST,
        oauth_url: str = OAUTH_SERVER,
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
        start = options.get("start")
        self.start = aware(start, "bitrix24: start") if start is not None else clock() - START_BACK
        self.rate, self.burst, self.oauth_url, self.batched = rate, burst, oauth_url, batched
        self._line_names: dict[str, str] = {}
        self.last: Portal | None = None  # the last sync's connection (tests read its counts)

    def ticket_url(self, ticket: str) -> str:
        if ticket.startswith("call"):
            return f"{self.portal}/telephony/detail.php"
        return f"{self.portal}/crm/activity/?open_view={ticket.removeprefix('mail')}"

    # -- sync ----------------------------------------------------------------------------

    def _connect(self, stop: threading.Event, cursor: Cursor | None) -> Portal:
        oauth = dict(self.oauth) if self.oauth else None
        sealed = (cursor or {}).get("token")
        if oauth and isinstance(sealed, str):  # a rotated refresh token from the last sync
            kept = unseal(sealed, oauth["client_secret"])
            oauth["refresh_token"] = kept or oauth["refresh_token"]
        portal = Portal(self.base, stop, self.secrets, oauth, self.oauth_url, self.rate, self.burst)
        self.last = portal
        return portal

    def _position(self, state: dict[str, Any], portal: Portal) -> Cursor:
        cursor = dict(state)
        if portal.oauth is not None:
            cursor["token"] = seal(portal.oauth["refresh_token"], portal.oauth["client_secret"])
        return cursor

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        portal = self._connect(stop, cursor)
        state: dict[str, Any] = {k: v for k, v in (cursor or {}).items() if k != "token"}
        notes: list[str] = []
        self._read_lines(portal, notes)
        parts = [("sessions", self._sessions)]
        parts += [("e-mail", self._mails)] if self.emails else []
        parts += [("calls", self._calls)] if self.calls else []
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
            found: list[dict[str, Any]] = []
            while True:
                params = {"PARAMS": {"limit": 200, "offset": len(found)}}
                page = rows(portal.call(LINES, params)["result"], LINES)
                found += page
                if len(page) < 200:
                    break
        except MethodPaused:
            return  # the names known from before do
        self._line_names = {str(x.get("ID")): str(x.get("LINE_NAME") or x.get("ID")) for x in found}
        off = [x for x in found if str(x.get("CRM")) != "Y" and self._watched(str(x.get("ID")))]
        if off:
            named = ", ".join(f"{x.get('LINE_NAME')!r} (id {x.get('ID')})" for x in off)
            notes.append(f"bitrix24: not watched: Open Lines with CRM integration off create no"
                         f" CRM activity, so their sessions cannot be read: {named}")  # fmt: skip

    def _watched(self, line: str) -> bool:
        return self.lines is None or line in self.lines

    # -- Open Lines sessions --------------------------------------------------------------

    def _sessions(
        self, portal: Portal, state: dict[str, Any], notes: list[str]
    ) -> Iterator[list[TicketChange]]:
        handled: set[str] = set()
        known_open = set(state.get("open") or [])
        still_open: set[str] = set()
        for page, position in self._walk(portal, state, "sessions", {"PROVIDER_ID": SESSION}):
            handled |= {str(a["ID"]) for a in page}
            still_open |= {str(a["ID"]) for a in page if str(a.get("COMPLETED")) != "Y"}
            changes = self._session_changes(portal, page, notes)
            state["sessions"] = position  # only once the page's changes are in hand
            yield changes
        open_now: list[dict[str, Any]] = []  # every open session, re-read for new messages
        after = 0
        while True:
            params = {"filter": {"PROVIDER_ID": SESSION, "COMPLETED": "N", ">ID": after},
                      "order": {"ID": "ASC"}, "select": SELECT, "start": -1}  # fmt: skip
            page = rows(portal.call(LIST, params)["result"], LIST)
            open_now += page
            if len(page) < PAGE:
                break
            after = max(int(a["ID"]) for a in page)
        still_open |= {str(a["ID"]) for a in open_now}
        stale = [a for a in open_now if str(a["ID"]) not in handled]
        for i in range(0, len(stale), PAGE):
            yield self._session_changes(portal, stale[i : i + PAGE], notes)
        missing = sorted(known_open - still_open - handled, key=int)
        for i in range(0, len(missing), PAGE):  # reconciliation: closed, or deleted?
            chunk = missing[i : i + PAGE]
            params = {"filter": {"@ID": chunk}, "select": SELECT, "start": -1}
            found = rows(portal.call(LIST, params)["result"], LIST)
            there = {str(a["ID"]) for a in found}
            now = self._clock()
            changes = self._session_changes(portal, found, notes)
            yield changes + [removed(aid, now) for aid in chunk if aid not in there]
        state["open"] = sorted(still_open, key=int)

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
                began = _began(answer, self._clock())
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

    def _session_changes(
        self, portal: Portal, activities: Sequence[dict[str, Any]], notes: list[str]
    ) -> list[TicketChange]:
        wanted = [a for a in activities
                  if str(a.get("PROVIDER_ID")) == SESSION
                  and self._watched(str(a.get("PROVIDER_TYPE_ID")))]  # fmt: skip
        commands = {str(a["ID"]): (HISTORY, {"SESSION_ID": str(a.get("ASSOCIATED_ENTITY_ID"))})
                    for a in wanted}  # fmt: skip
        histories, failed = self._run(portal, commands)
        changes = []
        for activity in wanted:
            aid = str(activity["ID"])
            if aid in failed or not isinstance(histories.get(aid), dict):
                notes.append(f"bitrix24: session activity {aid}: its history could not be read"
                             f" ({failed.get(aid, 'no history')}); skipped")  # fmt: skip
                continue
            try:
                changes.append(session_change(activity, histories[aid], self._line_names,
                                              self.ticket_url(aid)))  # fmt: skip
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                notes.append(f"bitrix24: session activity {aid} is not as documented"
                             f" ({type(exc).__name__}); skipped")  # fmt: skip
        return changes

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

    # -- CRM e-mail ----------------------------------------------------------------------

    def _mails(
        self, portal: Portal, state: dict[str, Any], notes: list[str]
    ) -> Iterator[list[TicketChange]]:
        for page, position in self._walk(portal, state, "mail", {"PROVIDER_ID": EMAIL}):
            changes = self._mail_changes(portal, page, notes)
            state["mail"] = position
            yield changes

    def _mail_changes(
        self, portal: Portal, page: Sequence[dict[str, Any]], notes: list[str]
    ) -> list[TicketChange]:
        """The threads these mails belong to, each re-read whole from its CRM owner."""
        page = [a for a in page if str(a.get("PROVIDER_ID")) == EMAIL]
        owners = {(str(a.get("OWNER_TYPE_ID")), str(a.get("OWNER_ID"))) for a in page}
        commands = {
            f"{t}_{o}": (LIST, {"filter": {"PROVIDER_ID": EMAIL, "OWNER_TYPE_ID": t,
                                           "OWNER_ID": o},
                                "order": {"ID": "ASC"}, "select": ["*", "COMMUNICATIONS"]})
            for t, o in sorted(owners)
        }  # fmt: skip
        found, failed = self._run(portal, commands)
        changed = {str(a["ID"]) for a in page}
        changes = []
        for key, result in found.items():
            mails = rows(result, LIST)
            if len(mails) >= PAGE:  # an owner with many mails: read them all
                mails = [m for p in portal.pages(LIST, commands[key][1]) for m in p]
            for thread in email_threads(mails):
                if changed & {str(m["ID"]) for m in thread}:
                    url = self.ticket_url(f"mail{thread[0]['ID']}")
                    changes.append(email_change(thread, url))
        notes += [f"bitrix24: the mails of CRM owner {k} could not be read" for k in failed]
        return changes

    # -- missed calls ----------------------------------------------------------------------

    def _calls(
        self, portal: Portal, state: dict[str, Any], notes: list[str]
    ) -> Iterator[list[TicketChange]]:
        mine = dict(state.get("calls") or {})
        waiting: dict[str, dict[str, Any]] = dict(mine.get("waiting") or {})
        after = int(mine.get("after") or 0)
        while True:
            where: dict[str, Any] = {">ID": after}
            if not after:
                where[">=CALL_START_DATE"] = portal_filter_time(self.start)
            params = {"FILTER": where, "SORT": "ID", "ORDER": "ASC", "start": 0}
            answer = portal.call(CALLS, params)
            page = rows(answer["result"], CALLS)
            if page:
                after = max(after, *(int(c["ID"]) for c in page))
            changes = _merged(call_changes(page, waiting, self.ticket_url("call")))
            state["calls"] = {"after": after, "waiting": waiting}
            yield changes
            if not page or "next" not in answer:
                return

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
        yield from self._session_changes(portal, found, notes)
        if self.emails:
            yield from self._mail_changes(portal, found, notes)


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    except ValueError:
        return {}


def _began(answer: Mapping[str, Any], fallback: dt.datetime) -> str:
    """When the portal began answering (its own clock, ``time.date_start``)."""
    timing = answer.get("time")
    start = timing.get("date_start") if isinstance(timing, dict) else None
    try:
        return portal_filter_time(instant(start)) if start else portal_filter_time(fallback)
    except ValueError:
        return portal_filter_time(fallback)


def _newest(changes: Sequence[TicketChange]) -> dt.datetime | None:
    return max((c.updated_at for c in changes if c.updated_at is not None), default=None)


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
