"""The ``jira`` connector: Jira Service Management Cloud's enhanced JQL search, each changed
issue's changelog, comments and CSAT feedback, and admin-webhook signatures (HELPDESK-APIS.md,
"JSM Cloud + Zammad REST", A. Jira Service Management Cloud).

Jira has no change stream: a sync searches ``/rest/api/3/search/jql`` (the old ``/search``
answers 410) for ``project in (...) AND updated >= "yyyy-MM-dd HH:mm" ORDER BY updated ASC``
and walks ``nextPageToken`` to ``isLast``. JQL dates have minute precision and are read in
the calling user's time zone (``/rest/api/3/myself``), and new changes may reach the search
late, so the lower bound is the stored position minus ``lookback``, floored to the minute,
in that zone. The overlap is de-duplicated: the cursor keeps ``since`` (the newest
``updated`` fully delivered) and ``seen`` (issue id -> ``updated`` of the issues delivered
within the overlap), and an issue met again unchanged is skipped.

Each search page becomes one Batch: every new or changed issue gets its whole changelog
and comments (both paged) and, once done, its CSAT feedback; its request channel comes from
JQL ``request-channel-type`` (there is no REST field for it). Only then is the position
after the page handed on with it. A failure anywhere on a page ends the sync before that
Batch, so the stored cursor stays before the page.

Absence from the search is not deletion: a deleted issue is known only from the
``jira:issue_deleted`` webhook, which :meth:`JiraConnector.verify_webhook` remembers (after
checking ``X-Hub-Signature``) until the next sync hands it on as a removal.

Options: ``url``; ``email`` + ``token`` (Cloud, Basic) or ``pat`` (Bearer); ``projects``
(service desk project keys); ``jql`` (an extra filter, ANDed, without ORDER BY); ``start``;
``statuses``/``priorities`` overrides (by Jira name); ``webhook_secret``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import zoneinfo
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
from connectors.jira_mapping import (
    PARTICIPANTS_FIELD,
    REQUEST_TYPE_FIELD,
    Site,
    ValueMap,
    history,
    instant,
    ticket_fields,
)
from rules.events import Removed

SEARCH = "/rest/api/3/search/jql"
PER_PAGE = 100  # issues per search page: each costs a changelog and a comments request or more
PAGE_SIZE = 100  # changelog and comment pages
LOOKBACK = dt.timedelta(minutes=2)  # search is eventually consistent; JQL has whole minutes
CHANNEL_QUERIES = ("email", "api", "jira")  # request-channel-type values asked for; else web
FIELDS = ("summary", "status", "priority", "issuetype", "labels", "reporter", "creator",
          "created", "updated", "project", "description", "resolutiondate")  # fmt: skip
SIGNATURE = "X-Hub-Signature"
EXPERIMENTAL = {"X-ExperimentalApi": "opt-in"}


@register
class JiraConnector(Connector):
    """Jira Service Management; see the module's docstring."""

    type = "jira"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        per_page: int = PER_PAGE,
        page_size: int = PAGE_SIZE,
        lookback: dt.timedelta = LOOKBACK,
    ) -> None:
        super().__init__(name, options)
        if not options.get("url"):
            raise FatalError("jira: give url")
        self.base = str(options["url"]).rstrip("/")
        email, token, pat = (options.get(k) for k in ("email", "token", "pat"))
        self._headers: dict[str, str] = {}
        self._auth: tuple[str, str] | None = None
        if pat:
            self._headers["Authorization"] = f"Bearer {pat}"
            self._secrets = [str(pat)]
        elif email and token:
            self._auth = (str(email), str(token))
            basic = base64.b64encode(f"{email}:{token}".encode()).decode()
            self._secrets = [str(token), basic]
        else:
            raise FatalError("jira: give email + token, or pat")
        projects = [str(p) for p in options.get("projects") or ()]
        if not projects:
            raise FatalError("jira: give projects (the service desks' project keys)")
        self.projects = projects
        self.jql = str(options["jql"]).strip() if options.get("jql") else None
        self._clock = clock
        self.start = start_of(options, "jira", clock())
        self.mapping = ValueMap(options.get("statuses") or {}, options.get("priorities") or {})
        secret = options.get("webhook_secret")
        self.webhook_secret = str(secret) if secret else None
        self.per_page, self.page_size, self.lookback = per_page, page_size, lookback
        self._zone: dt.tzinfo | None = None  # the API user's time zone, read once
        self._site: Site | None = None  # custom field ids, read once
        self._channels: dict[str, str | None] = {}  # by issue id; a request keeps its channel
        self._keys: dict[str, str] = {}  # issue id -> key, for links
        self._deleted: dict[str, dt.datetime] = {}  # from webhooks, until the next sync
        self._lock = threading.Lock()

    def ticket_url(self, ticket: str) -> str:
        return f"{self.base}/browse/{self._keys.get(ticket, ticket)}"

    # -- sync ----------------------------------------------------------------------------

    def _http(self, stop: threading.Event) -> Http:
        return Http("jira", self.base, stop, headers=self._headers, auth=self._auth,
                    secrets=self._secrets)  # fmt: skip

    def sync(self, cursor: Cursor | None, stop: threading.Event) -> Iterator[Batch]:
        http = self._http(stop)
        since = _since(cursor) or self.start
        seen: dict[str, str] = dict((cursor or {}).get("seen") or {})
        position: Cursor = dict(cursor) if cursor else {"since": since.isoformat(), "seen": {}}
        with self._lock:
            deleted = dict(self._deleted)
        if deleted:
            yield Batch([_removal(iid, at) for iid, at in deleted.items()], position)
            with self._lock:
                for iid in deleted:
                    self._deleted.pop(iid, None)
        zone = self._user_zone(http)
        site = self._fields(http)
        jql = self._query(since - self.lookback, zone)
        names = ",".join((*FIELDS, *site.extra_fields()))
        token: str | None = None
        asked: set[str] = set()
        while True:
            params: dict[str, Any] = {"jql": jql, "fields": names, "maxResults": self.per_page}
            if token:
                params["nextPageToken"] = token
            try:
                response = http.request("GET", SEARCH, params=params)
            except RetriableError as exc:
                if (
                    exc.status == 400 and not token
                ):  # our own query refused: asking again won't help
                    raise FatalError(f"{exc}; check the connector's jql option") from None
                raise
            if response.status_code == 404:
                raise FatalError(
                    f"jira: {self.base} has no {SEARCH} (Jira Cloud's enhanced search); "
                    "Data Center sites are not supported"
                )
            page = _body(http.decode(response, SEARCH), "issues", SEARCH)
            issues = list({str(i["id"]): i for i in page["issues"] if _is_issue(i)}.values())
            fresh = [i for i in issues if seen.get(str(i["id"])) != _updated(i).isoformat()]
            changes = self._changes(http, fresh, site)
            newest = max((_updated(i) for i in issues), default=None)
            if newest is not None and newest > since:
                since = newest
            seen.update((str(i["id"]), _updated(i).isoformat()) for i in issues)
            floor = since - self.lookback - dt.timedelta(minutes=1)
            seen = {k: v for k, v in seen.items() if dt.datetime.fromisoformat(v) >= floor}
            position = {"since": since.isoformat(), "seen": dict(sorted(seen.items()))}
            following = page.get("nextPageToken")
            last = page.get("isLast") is True or not isinstance(following, str) or not following
            notes = self.mapping.notes()
            stuck = not last and following in asked
            if stuck:  # a token that does not move would loop forever: resume next poll
                notes.append("jira: the search repeated its nextPageToken; resuming next poll")
            yield Batch(changes, position, newest=self._clock() if last else newest,
                        done=last or stuck, notes=tuple(notes))  # fmt: skip
            if last or stuck or stop.is_set():
                return
            assert isinstance(following, str)
            asked.add(following)
            token = following

    def _changes(self, http: Http, issues: list[dict[str, Any]], site: Site) -> list[TicketChange]:
        if issues and not site.statuses:
            site.statuses = self._statuses(http)
        self._learn_channels(http, [str(i["id"]) for i in issues])
        return [self._change(http, issue, site) for issue in issues]

    def fetch_tickets(
        self, tickets: Sequence[str], stop: threading.Event
    ) -> Iterator[TicketChange]:
        """Issues a webhook named, read at once through the search (``id in (...)``, up to
        a page at a time); one deleted meanwhile is found by the next sync."""
        http = self._http(stop)
        site = self._fields(http)
        names = ",".join((*FIELDS, *site.extra_fields()))
        ids = sorted({t for t in tickets if t.isdigit()}, key=int)
        for i in range(0, len(ids), self.per_page):
            jql = f"id in ({', '.join(ids[i : i + self.per_page])})"
            params = {"jql": jql, "fields": names, "maxResults": self.per_page}
            page = _body(
                http.decode(http.request("GET", SEARCH, params=params), SEARCH), "issues", SEARCH
            )
            yield from self._changes(http, [x for x in page["issues"] if _is_issue(x)], site)

    def _query(self, since: dt.datetime, zone: dt.tzinfo) -> str:
        local = since.astimezone(zone).replace(second=0, microsecond=0)
        projects = ", ".join(_quote(p) for p in self.projects)
        jql = f'project in ({projects}) AND updated >= "{local:%Y-%m-%d %H:%M}"'
        if self.jql:
            jql += f" AND ({self.jql})"
        return jql + " ORDER BY updated ASC, key ASC"

    def _change(self, http: Http, issue: dict[str, Any], site: Site) -> TicketChange:
        iid, key = str(issue["id"]), str(issue.get("key") or issue["id"])
        self._keys[iid] = key
        changelog = self._paged(http, f"/rest/api/3/issue/{iid}/changelog", "values")
        comments = self._paged(http, f"/rest/api/3/issue/{iid}/comment", "comments")
        category = ((issue["fields"].get("status") or {}).get("statusCategory") or {}).get("key")
        feedback = self._feedback(http, iid) if category == "done" else None
        channel = self.mapping.channel(self._channels.get(iid))
        try:
            url = f"{self.base}/browse/{key}"
            fields = ticket_fields(issue, site, self.mapping, channel, url)
            events = history(issue, changelog, comments, feedback, site, self.mapping, channel)
            created = instant(issue["fields"]["created"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetriableError(
                f"jira: issue {key} or its history is not as documented ({type(exc).__name__})"
            ) from None
        return TicketChange(iid, fields, events, created_at=created,
                            updated_at=max(e.at for e in events))  # fmt: skip

    def _paged(self, http: Http, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a ``startAt``/``maxResults``/``total`` page bean (``isLast`` where
        given). An issue deleted since the search (404) has none."""
        items: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"startAt": len(items), "maxResults": self.page_size}
            if key == "comments":
                params["orderBy"] = "created"
            response = http.request("GET", path, params=params)
            if response.status_code == 404:
                return []
            body = _body(http.decode(response, path), key, path)
            got = [item for item in body[key] if isinstance(item, dict)]
            items += got
            total = body.get("total")
            if body.get("isLast") is True or not got:
                return items
            if isinstance(total, int) and len(items) >= total:
                return items
            if body.get("isLast") is None and not isinstance(total, int):
                return items  # neither says there is more

    def _feedback(self, http: Http, iid: str) -> dict[str, Any] | None:
        path = f"/rest/servicedeskapi/request/{iid}/feedback"
        response = http.request("GET", path, headers=EXPERIMENTAL)
        if response.status_code == 404:
            return None  # not rated
        body = http.decode(response, path)
        return body if isinstance(body, dict) else None

    def _learn_channels(self, http: Http, ids: list[str]) -> None:
        """Each new issue's request channel, by JQL (one search per channel asked for)."""
        missing = [i for i in ids if i not in self._channels]
        if not missing:
            return
        found: dict[str, str | None] = dict.fromkeys(missing)
        for channel in CHANNEL_QUERIES:
            for i in range(0, len(missing), self.per_page):
                chunk = missing[i : i + self.per_page]
                jql = f"id in ({', '.join(chunk)}) AND request-channel-type = {channel}"
                params = {"jql": jql, "fields": "id", "maxResults": len(chunk)}
                page = _body(http.get(SEARCH, **params), "issues", SEARCH)
                for issue in page["issues"]:
                    if _is_issue(issue) and str(issue["id"]) in found:
                        found[str(issue["id"])] = channel
        self._channels.update(found)

    def _user_zone(self, http: Http) -> dt.tzinfo:
        if self._zone is None:
            me = http.get("/rest/api/3/myself")
            name = me.get("timeZone") if isinstance(me, dict) else None
            try:
                self._zone = zoneinfo.ZoneInfo(str(name)) if name else dt.UTC
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self._zone = dt.UTC
        return self._zone

    def _fields(self, http: Http) -> Site:
        """Which custom fields hold the request type and the participants (ids vary)."""
        if self._site is None:
            site = Site()
            found = http.get("/rest/api/3/field")
            for item in found if isinstance(found, list) else ():
                custom = (
                    (item.get("schema") or {}).get("custom") if isinstance(item, dict) else None
                )
                if custom == REQUEST_TYPE_FIELD:
                    site.request_type = str(item["id"])
                elif custom == PARTICIPANTS_FIELD:
                    site.participants = str(item["id"])
            self._site = site
        return Site(dict(self._site.statuses), self._site.request_type, self._site.participants)

    def _statuses(self, http: Http) -> dict[str, tuple[str, str]]:
        found = http.get("/rest/api/3/status")
        statuses = {}
        for item in found if isinstance(found, list) else ():
            if isinstance(item, dict) and "id" in item:
                category = (item.get("statusCategory") or {}).get("key")
                statuses[str(item["id"])] = (str(item.get("name")), str(category))
        return statuses

    # -- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """An admin webhook's ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>``,
        compared in constant time. A verified ``jira:issue_deleted`` is remembered: the
        next sync hands the deletion on (the search never shows it)."""
        signature = header(headers, SIGNATURE)
        if not self.webhook_secret or not signature:
            return False
        method, _, given = signature.strip().partition("=")
        if method.strip().lower() != "sha256":
            return False
        digest = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(digest.encode(), given.strip().lower().encode()):
            return False
        self._remember(body)
        return True

    def webhook_tickets(self, body: bytes) -> Sequence[str]:
        """The issue an ``issue_created``/``issue_updated``/comment webhook names; a
        deletion is handed on by the next sync instead (see :meth:`verify_webhook`)."""
        try:
            event = json.loads(body)
        except ValueError:
            return ()
        if not isinstance(event, dict) or event.get("webhookEvent") == "jira:issue_deleted":
            return ()
        return numeric_id(body, "issue.id")

    def _remember(self, body: bytes) -> None:
        try:
            event = json.loads(body)
        except ValueError:
            return
        if not isinstance(event, dict) or event.get("webhookEvent") != "jira:issue_deleted":
            return
        issue = event.get("issue")
        if not isinstance(issue, dict) or not str(issue.get("id") or "").isdigit():
            return
        stamp = event.get("timestamp")
        at = instant(stamp) if isinstance(stamp, int) else self._clock()
        with self._lock:
            self._deleted.setdefault(str(issue["id"]), at)


def _removal(iid: str, at: dt.datetime) -> TicketChange:
    # A deleted request reads as closed, so one deleted before slamon saw it is not open.
    event = Removed(f"{iid}:deleted", at, "deleted", seq=5_000_000)
    return TicketChange(iid, {"status": "closed"}, [event], updated_at=at)


def _since(cursor: Cursor | None) -> dt.datetime | None:
    value = (cursor or {}).get("since")
    try:
        return instant(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _body(data: Any, key: str, path: str) -> dict[str, Any]:
    return holding_list("jira", data, key, path)


def _is_issue(item: Any) -> bool:
    return isinstance(item, dict) and str(item.get("id") or "").isdigit()


def _updated(issue: dict[str, Any]) -> dt.datetime:
    fields = issue.get("fields") or {}
    try:
        return instant(fields.get("updated") or fields["created"])
    except (KeyError, TypeError, ValueError):
        raise RetriableError(f"jira: issue {issue.get('key')} came without its times") from None


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
