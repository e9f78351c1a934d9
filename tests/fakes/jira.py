"""A fake Jira Service Management Cloud, serving what HELPDESK-APIS.md ("JSM Cloud + Zammad
REST", A. Jira Service Management Cloud) describes, to the field name.

Served: the auth check (Basic ``email:api_token``, or a Bearer token; anything else 401 in
the platform envelope ``{"errorMessages":[...],"errors":{}}``); the old ``/rest/api/{2,3}/
search`` answering **410** with the documented body; the enhanced search
``/rest/api/3/search/jql`` (GET and POST) with ``jql`` (bounded, else 400), ``fields``
(default ``id`` only), ``maxResults``, ``nextPageToken`` and ``isLast`` and no ``total``; a
JQL subset: ``project in (...)``/``project = X``, ``updated >= "yyyy-MM-dd HH:mm"`` at
minute precision in the calling user's time zone, ``id in (...)``, ``request-channel-type =
x``, ``labels = x``, parentheses, ``ORDER BY updated ASC[, key ASC]``; ``/myself`` with its
``timeZone``; ``/status``; ``/field`` (the request-type and participants custom fields);
each issue's changelog (PageBean, oldest first) and comments (``startAt``/``maxResults``/
``total``, ``jsdPublic``, ``author.accountType``); the servicedeskapi CSAT ``feedback``
(404 in its own envelope when there is none). Times are written in the user's zone with
colon-less offsets (``2026-11-23T03:00:00.000-0600``).

Issues change through methods that write what Jira writes: a comment bumps ``updated``, a
transition or priority change adds a changelog entry, a deletion makes the issue vanish
from search (and 404) and returns the ``jira:issue_deleted`` webhook payload.

Faults on demand: :meth:`fail` (5xx, a 404, or a truncated body on requests whose path
contains a text), :meth:`limit` (429, or 503, with Retry-After once a budget is spent,
counting requests before Retry-After elapsed in ``early``), :meth:`revoke`, ``stuck``.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import math
import re
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.fakes.faults import Faults
from tests.fakes.scenario import Step, Story

UTC = dt.UTC
GONE = ("The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
        "A full migration guideline is available at "
        "https://developer.atlassian.com/changelog/#CHANGE-2046")  # fmt: skip
STATUSES = {  # id: (name, category id, key, colour, category name) -- JSM's defaults
    "10001": ("Waiting for support", 2, "new", "blue-gray", "To Do"),
    "10002": ("Waiting for customer", 4, "indeterminate", "yellow", "In Progress"),
    "3": ("In Progress", 4, "indeterminate", "yellow", "In Progress"),
    "10003": ("Pending", 4, "indeterminate", "yellow", "In Progress"),
    "10004": ("Escalated", 4, "indeterminate", "yellow", "In Progress"),
    "10005": ("Resolved", 3, "done", "green", "Done"),
    "6": ("Closed", 3, "done", "green", "Done"),
    "10006": ("Canceled", 3, "done", "green", "Done"),
}
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
# The story's normalized values as this JSM would hold them.
STORY_STATUS = {"new": "Waiting for support", "open": "In Progress",
                "pending": "Waiting for customer", "on_hold": "Pending", "solved": "Resolved",
                "closed": "Closed"}  # fmt: skip
STORY_PRIORITY = {"low": "Low", "normal": "Medium", "high": "High", "urgent": "Highest"}
STORY_CHANNEL = {"email": "email", "web": "portal", "api": "api"}
REQUEST_TYPE, PARTICIPANTS = "customfield_10010", "customfield_10026"
NOT_FOUND = ["Issue does not exist or you do not have permission to see it."]
ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _platform(*messages: str, status: int) -> Any:
    return jsonify(errorMessages=list(messages), errors={}), status


class FakeJira(Faults):
    def __init__(
        self,
        email: str = "bot@acme.test",
        token: str = "jira-api-token",
        pat: str = "jira-pat",
        zone: str = "America/Chicago",
        clock: Callable[[], float] = time.time,
    ) -> None:
        basic = base64.b64encode(f"{email}:{token}".encode()).decode()
        self.credentials = {f"Basic {basic}", f"Bearer {pat}"}
        self.zone = zoneinfo.ZoneInfo(zone)
        self.clock = clock
        self._ids = itertools.count(10_000)
        self.users: dict[str, dict[str, Any]] = {}
        self.me = self.user("Sync Bot", "atlassian", email=email)
        self.statuses = dict(STATUSES)
        self.priorities = dict(PRIORITIES)  # name: id (a site may add its own)
        self.request_types: dict[str, dict[str, Any]] = {}
        self.project = {"id": "10000", "key": "SD", "name": "IT Service Desk",
                        "projectTypeKey": "service_desk"}  # fmt: skip
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.changelog: dict[int, list[dict[str, Any]]] = {}
        self.feedback: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, str] = {}
        self.deleted: set[int] = set()
        super().__init__()
        self._issue_ids = itertools.count(10_001)
        self._numbers = itertools.count(1)
        self._event_ids = itertools.count(100_001)
        self.limit_status = 429
        self.stuck = False  # isLast never true: an empty last page repeats its token
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.app = self._build()

    # -- the data ------------------------------------------------------------------------

    def user(self, name: str, kind: str = "customer", email: str | None = None) -> str:
        """An account: ``atlassian`` (agents, or customers with an Atlassian account),
        ``customer`` (portal-only) or ``app`` (automation, integrations)."""
        number = next(self._ids)
        aid = f"qm:{number:x}" if kind == "customer" else f"5b10a2844c20165700ede{number}"
        self.users[aid] = {
            "self": f"/rest/api/3/user?accountId={aid}", "accountId": aid, "accountType": kind,
            "emailAddress": email or f"{name.split()[0].lower()}@x.test", "displayName": name,
            "active": True, "timeZone": "Europe/Berlin",
        }  # fmt: skip
        return aid

    def request_type(self, name: str) -> str:
        for rid, kind in self.request_types.items():
            if kind["name"] == name:
                return rid
        rid = str(next(self._ids))
        self.request_types[rid] = {"id": rid, "name": name, "description": "", "helpText": "",
                                   "issueTypeId": "10002", "serviceDeskId": "1",
                                   "portalId": "1", "groupIds": []}  # fmt: skip
        return rid

    def status(self, name: str, category: str = "indeterminate") -> str:
        """A custom status (category ``undefined`` has no mapping)."""
        sid = str(next(self._ids))
        cid, colour, title = {"new": (2, "blue-gray", "To Do"), "done": (3, "green", "Done"),
                              "undefined": (1, "medium-gray", "No Category")}.get(
            category, (4, "yellow", "In Progress"))  # fmt: skip
        self.statuses[sid] = (name, cid, category, colour, title)
        return sid

    def create(
        self,
        when: dt.datetime,
        reporter: str,
        *,
        creator: str | None = None,
        summary: str = "Help",
        priority: str | None = "Medium",
        status: str = "Waiting for support",
        channel: str | None = "portal",
        request_type: str | None = "Get IT help",
        labels: Iterable[str] = (),
        description: bool = True,
        participants: Iterable[str] = (),
        kind: str = "Service Request",
    ) -> int:
        iid = next(self._issue_ids)
        rtype = self.request_types[self.request_type(request_type)] if request_type else None
        self.issues[iid] = {
            "key": f"{self.project['key']}-{next(self._numbers)}",
            "summary": summary, "status": self._status_id(status),
            "priority": self.priorities.get(priority) if priority else None,
            "issuetype": kind, "labels": list(labels), "reporter": reporter,
            "creator": creator or reporter, "created": when, "updated": when,
            "description": description, "resolutiondate": None,
            "request_type": rtype, "participants": list(participants),
        }  # fmt: skip
        self.comments[iid], self.changelog[iid] = [], []
        if channel:
            self.channels[iid] = channel
        return iid

    def comment(self, iid: int, when: dt.datetime, author: str, public: bool = True) -> None:
        self.comments[iid].append({"id": str(next(self._event_ids)), "author": author,
                                   "created": when, "jsdPublic": public})  # fmt: skip
        self._touch(iid, when)

    def change(self, iid: int, when: dt.datetime, author: str, **changes: str) -> None:
        """One changelog entry: ``status`` (a name), ``priority`` (a name), ``labels``
        (space-separated), ``issuetype``."""
        issue, items = self.issues[iid], []
        for name, value in changes.items():
            if name == "status":
                new = self._status_id(value)
                old = issue["status"]
                items.append({"field": "status", "fieldtype": "jira", "fieldId": "status",
                              "from": old, "fromString": self.statuses[old][0], "to": new,
                              "toString": value})  # fmt: skip
                issue["status"] = new
                done = self.statuses[new][2] == "done"
                issue["resolutiondate"] = when if done else None
            elif name == "priority":
                old = issue["priority"]
                names = {v: k for k, v in self.priorities.items()}
                new = self.priorities[value]
                items.append({"field": "priority", "fieldtype": "jira", "fieldId": "priority",
                              "from": old, "fromString": names.get(old), "to": new,
                              "toString": value})  # fmt: skip
                issue["priority"] = new
            elif name == "labels":
                old = " ".join(issue["labels"])
                items.append({"field": "labels", "fieldtype": "jira", "fieldId": "labels",
                              "from": None, "fromString": old, "to": None,
                              "toString": value})  # fmt: skip
                issue["labels"] = value.split()
            else:
                items.append({"field": name, "fieldtype": "jira", "fieldId": name, "from": None,
                              "fromString": issue[name], "to": None,
                              "toString": value})  # fmt: skip
                issue[name] = value
        self.changelog[iid].append({"id": str(next(self._event_ids)), "author": author,
                                    "created": when, "items": items})  # fmt: skip
        self._touch(iid, when)

    def rate(self, iid: int, when: dt.datetime, rating: int) -> None:
        self.feedback[iid] = {"type": "csat", "rating": rating, "comment": {"body": ""}}
        self._touch(iid, when)

    def delete(self, iid: int, when: dt.datetime) -> dict[str, Any]:
        """Delete an issue; returns the ``jira:issue_deleted`` webhook's payload."""
        issue = self._render(iid, "summary,status,created,updated,reporter".split(","))
        self.deleted.add(iid)
        return {"timestamp": int(when.timestamp() * 1000), "webhookEvent": "jira:issue_deleted",
                "user": self.users[self.me], "issue": issue}  # fmt: skip

    def load(self, stories: Iterable[Story]) -> dict[str, int]:
        """The scenario's stories as requests: an agent, an automation app, one customer
        per story (every other one with an Atlassian account: a customer as the reporter),
        a request type per queue. A first message at the creation by its creator is the
        description; every other message a comment."""
        agent = self.user("Ann Agent", "atlassian")
        bot = self.user("Automation for Jira", "app")
        ids = {}
        for n, story in enumerate(stories):
            customer = self.user(f"{story.key.title()} Customer",
                                 "atlassian" if n % 2 else "customer")  # fmt: skip
            who = {"customer": customer, "agent": agent, "system": bot}
            steps = list(story.steps)
            first = steps[0] if steps and steps[0].kind == "message" else None
            if not (first and first.when == story.created and first.who == story.by
                    and first.public):  # fmt: skip
                first = None
            iid = ids[story.key] = self.create(
                story.created, customer, creator=who[story.by], summary=story.subject,
                priority=STORY_PRIORITY[story.priority], channel=STORY_CHANNEL.get(story.channel),
                request_type=story.queue, description=first is not None,
            )  # fmt: skip
            for step in steps[1:] if first else steps:
                self._tell(iid, step, who, agent)
        return ids

    def _tell(self, iid: int, step: Step, who: dict[str, str], agent: str) -> None:
        if step.kind == "message":
            self.comment(iid, step.when, who[step.who], step.public)
        elif step.kind == "status":
            self.change(iid, step.when, agent, status=STORY_STATUS[step.value])
        elif step.kind == "priority":
            self.change(iid, step.when, agent, priority=STORY_PRIORITY[step.value])
        else:
            self.rate(iid, step.when, step.score)

    def _status_id(self, name: str) -> str:
        return next(sid for sid, status in self.statuses.items() if status[0] == name)

    def _touch(self, iid: int, when: dt.datetime) -> None:
        issue = self.issues[iid]
        issue["updated"] = max(issue["updated"], when)

    def time(self, when: dt.datetime) -> str:
        local = when.astimezone(self.zone)
        return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}" + (
            local.strftime("%z"))  # fmt: skip

    # -- faults --------------------------------------------------------------------------

    def limit(self, every: int, retry_after: int = 1, status: int = 429) -> None:
        """Allow ``every`` requests per window; then ``status`` with Retry-After until the
        window has passed."""
        super().limit(every, retry_after)
        self.limit_status = status

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = self._flask("fake-jira")
        app.add_url_rule("/rest/api/3/search/jql", view_func=self._search,
                         methods=["GET", "POST"])  # fmt: skip
        for version in ("2", "3"):
            app.add_url_rule(f"/rest/api/{version}/search", endpoint=f"old{version}",
                             view_func=self._gone, methods=["GET", "POST"])  # fmt: skip
        for rule, view in (
            ("/rest/api/3/myself", self._myself),
            ("/rest/api/3/status", self._statuses),
            ("/rest/api/3/field", self._fields),
            ("/rest/api/3/issue/<ref>/changelog", self._changelog),
            ("/rest/api/3/issue/<ref>/comment", self._comments),
            ("/rest/servicedeskapi/request/<ref>/feedback", self._feedback),
        ):
            app.add_url_rule(rule, view_func=view)
        app.register_error_handler(404, lambda _: _platform("Not found", status=404))
        return app

    def _too_many(self, wait: float) -> Any:
        reset = dt.datetime.now(UTC) + dt.timedelta(seconds=self.retry_after + 60)
        headers = {"Retry-After": str(math.ceil(wait)),
                   "X-RateLimit-Limit": str(self.every), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
                   "RateLimit-Reason": "jira-burst-based"}  # fmt: skip
        return "", self.limit_status, headers

    def _failed(self, status: int) -> Any:
        if status == 404:
            return _platform(*NOT_FOUND, status=404)
        return ERRORS.get(status, "error"), status

    def _check(self) -> Any:
        if request.headers.get("Authorization") not in self.credentials:
            return _platform("You are not authenticated. Authentication required to perform "
                             "this operation.", status=401)  # fmt: skip
        return None

    def _headers(self, response: Response) -> None:
        if response.status_code < 400:
            response.headers["X-RateLimit-Limit"] = "100"
            response.headers["X-RateLimit-Remaining"] = "99"

    def _gone(self) -> Any:
        return _platform(GONE, status=410)

    def _myself(self) -> Any:
        me = self.users[self.me]
        return jsonify({**me, "timeZone": str(self.zone), "locale": "en_US", "groups": {},
                        "applicationRoles": {}})  # fmt: skip

    def _statuses(self) -> Any:
        return jsonify([{
            "self": f"/rest/api/3/status/{sid}", "description": "", "iconUrl": "", "name": name,
            "id": sid, "statusCategory": {"self": f"/rest/api/3/statuscategory/{cid}",
                                          "id": cid, "key": key, "colorName": colour,
                                          "name": title},
        } for sid, (name, cid, key, colour, title) in self.statuses.items()])  # fmt: skip

    def _fields(self) -> Any:
        def custom(fid: str, name: str, kind: str, plugin: str) -> dict[str, Any]:
            number = int(fid.rpartition("_")[2])
            return {"id": fid, "key": fid, "name": name, "custom": True, "orderable": True,
                    "navigable": True, "searchable": True,
                    "clauseNames": [f"cf[{number}]", name],
                    "schema": {"type": kind, "custom": plugin, "customId": number}}  # fmt: skip

        return jsonify([
            {"id": "summary", "key": "summary", "name": "Summary", "custom": False,
             "schema": {"type": "string", "system": "summary"}},
            {"id": "status", "key": "status", "name": "Status", "custom": False,
             "schema": {"type": "status", "system": "status"}},
            custom(REQUEST_TYPE, "Request Type", "sd-customerrequesttype",
                   "com.atlassian.servicedesk:vp-origin"),
            custom(PARTICIPANTS, "Request participants", "array",
                   "com.atlassian.servicedesk:sd-request-participants"),
        ])  # fmt: skip

    # -- search --------------------------------------------------------------------------

    def _search(self) -> Any:
        if request.method == "POST":
            body = request.get_json(silent=True) or {}
            jql, token = str(body.get("jql") or ""), body.get("nextPageToken")
            fields = body.get("fields") or ["id"]
            size = int(body.get("maxResults") or 50)
        else:
            jql, token = request.args.get("jql", ""), request.args.get("nextPageToken")
            fields = (request.args.get("fields") or "id").split(",")
            size = request.args.get("maxResults", 50, type=int)
        try:
            test, order = self._parse(jql)
        except ValueError as exc:
            return _platform(str(exc), status=400)
        offset = 0
        if token:
            try:
                mark = json.loads(base64.urlsafe_b64decode(token.encode()))
                assert mark["q"] == jql
                offset = int(mark["o"])
            except Exception:
                return _platform("The provided next page token is invalid or expired.",
                                 status=400)  # fmt: skip
        size = max(1, min(size, 100 if fields != ["id"] else 5000))
        with self.lock:
            found = [iid for iid in self.issues if iid not in self.deleted and test(iid)]
            found.sort(key=order)
            chunk = found[offset : offset + size]
            issues = [self._render(iid, fields) for iid in chunk]
        last = offset + size >= len(found)
        answer: dict[str, Any] = {"issues": issues, "isLast": last}
        if not last or self.stuck:
            answer["isLast"] = False
            mark = {"q": jql, "o": offset + len(chunk)}  # stuck: the end repeats its token
            answer["nextPageToken"] = base64.urlsafe_b64encode(json.dumps(mark).encode()).decode()
        return jsonify(answer)

    def _render(self, iid: int, fields: list[str]) -> dict[str, Any]:
        issue = self.issues[iid]
        rendered: dict[str, Any] = {"expand": "", "id": str(iid), "self":
                                    f"/rest/api/3/issue/{iid}", "key": issue["key"]}  # fmt: skip
        if fields == ["id"]:
            return {"id": str(iid)}
        values: dict[str, Any] = {}
        for name in fields:
            values[name] = self._field(iid, issue, name)
        rendered["fields"] = values
        return rendered

    def _field(self, iid: int, issue: dict[str, Any], name: str) -> Any:
        if name in ("created", "updated", "resolutiondate"):
            return self.time(issue[name]) if issue[name] else None
        if name in ("reporter", "creator"):
            return self.users[issue[name]]
        if name == "status":
            sname, cid, key, colour, title = self.statuses[issue["status"]]
            return {"self": "", "description": "", "iconUrl": "", "name": sname,
                    "id": issue["status"], "statusCategory": {"self": "", "id": cid, "key": key,
                                                              "colorName": colour,
                                                              "name": title}}  # fmt: skip
        if name == "priority":
            names = {v: k for k, v in self.priorities.items()}
            pid = issue["priority"]
            return None if pid is None else {"self": "", "iconUrl": "", "name": names[pid],
                                             "id": pid}  # fmt: skip
        if name == "issuetype":
            return {"id": "10002", "name": issue["issuetype"], "subtask": False}
        if name == "project":
            return dict(self.project)
        if name == "description":
            if not issue["description"]:
                return None
            return {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
                {"type": "text", "text": issue["summary"]}]}]}  # fmt: skip
        if name == REQUEST_TYPE:
            rtype = issue["request_type"]
            if rtype is None:
                return None
            status = self.statuses[issue["status"]]
            return {"_links": {}, "requestType": rtype,
                    "currentStatus": {"status": status[0], "statusCategory": status[2].upper(),
                                      "statusDate": {}}}  # fmt: skip
        if name == PARTICIPANTS:
            return [self.users[p] for p in issue["participants"]]
        return issue.get(name)

    def _parse(self, jql: str) -> tuple[Callable[[int], bool], Callable[[int], Any]]:
        text = jql.strip()
        order_by: list[str] = []
        match = re.search(r"(?:^|\s+)ORDER\s+BY\s+(.+)$", text, re.IGNORECASE)
        if match:
            order_by = [o.strip().lower() for o in match.group(1).split(",")]
            text = text[: match.start()]
        if not text.strip():
            raise ValueError("Unbounded JQL queries are not allowed here. Please add a search "
                             "restriction to your query.")  # fmt: skip
        test = self._clauses(text)

        def order(iid: int) -> Any:
            issue, key = self.issues[iid], []
            for part in order_by or ["created desc"]:
                name, _, direction = part.partition(" ")
                value = {"updated": issue["updated"].timestamp(),
                         "created": issue["created"].timestamp(),
                         "key": iid}.get(name, iid)  # fmt: skip
                key.append(-value if direction.strip() == "desc" else value)
            return tuple(key)

        return test, order

    def _clauses(self, text: str) -> Callable[[int], bool]:
        parts = _split_and(text.strip())
        tests = [self._clause(part.strip()) for part in parts]
        return lambda iid: all(test(iid) for test in tests)

    def _clause(self, clause: str) -> Callable[[int], bool]:
        if clause.startswith("(") and clause.endswith(")"):
            return self._clauses(clause[1:-1])
        if m := re.fullmatch(r"project\s+in\s+\((.*)\)|project\s*=\s*(.+)", clause, re.I):
            keys = {v.strip().strip('"') for v in (m.group(1) or m.group(2)).split(",")}
            return lambda iid: self.project["key"] in keys
        if m := re.fullmatch(r'updated\s*>=\s*["\'](\d{4})[-/](\d\d)[-/](\d\d) (\d\d):(\d\d)["\']',
                             clause, re.I):  # fmt: skip
            y, mo, d, h, mi = (int(x) for x in m.groups())
            bound = dt.datetime(y, mo, d, h, mi, tzinfo=self.zone)
            return lambda iid: self.issues[iid]["updated"] >= bound
        if m := re.fullmatch(r"(?:id|issuekey|key)\s+in\s+\((.*)\)", clause, re.I):
            wanted = {v.strip().strip('"') for v in m.group(1).split(",")}
            return lambda iid: str(iid) in wanted or self.issues[iid]["key"] in wanted
        if m := re.fullmatch(r"request-channel-type\s*=\s*\"?(\w+)\"?", clause, re.I):
            channel = m.group(1).lower()
            return lambda iid: self.channels.get(iid) == channel
        if m := re.fullmatch(r"labels\s*=\s*\"?([\w-]+)\"?", clause, re.I):
            label = m.group(1)
            return lambda iid: label in self.issues[iid]["labels"]
        raise ValueError(f"Error in the JQL Query: the clause '{clause}' is not understood.")

    # -- per issue -----------------------------------------------------------------------

    def _issue(self, ref: str) -> int | None:
        for iid, issue in self.issues.items():
            if (ref == str(iid) or ref == issue["key"]) and iid not in self.deleted:
                return iid
        return None

    def _changelog(self, ref: str) -> Any:
        iid = self._issue(ref)
        if iid is None:
            return _platform(*NOT_FOUND, status=404)
        start = request.args.get("startAt", 0, type=int)
        size = max(1, min(request.args.get("maxResults", 100, type=int), 100))
        entries = self.changelog[iid]
        values = [{**e, "author": self.users[e["author"]], "created": self.time(e["created"])}
                  for e in entries[start : start + size]]  # fmt: skip
        last = start + size >= len(entries)
        page = {"self": request.base_url, "maxResults": size, "startAt": start,
                "total": len(entries), "isLast": last, "values": values}  # fmt: skip
        if not last:
            page["nextPage"] = f"{request.base_url}?startAt={start + size}&maxResults={size}"
        return jsonify(page)

    def _comments(self, ref: str) -> Any:
        iid = self._issue(ref)
        if iid is None:
            return _platform(*NOT_FOUND, status=404)
        start = request.args.get("startAt", 0, type=int)
        size = max(1, min(request.args.get("maxResults", 100, type=int), 100))
        ordered = sorted(self.comments[iid], key=lambda c: c["created"])
        if request.args.get("orderBy") == "-created":
            ordered.reverse()
        out = []
        for c in ordered[start : start + size]:
            who = self.users[c["author"]]
            out.append({
                "self": f"/rest/api/3/issue/{iid}/comment/{c['id']}", "id": c["id"],
                "author": who, "updateAuthor": who,
                "body": {"type": "doc", "version": 1, "content": []},
                "created": self.time(c["created"]), "updated": self.time(c["created"]),
                "jsdPublic": c["jsdPublic"], "jsdAuthorCanSeeRequest": True,
            })  # fmt: skip
        return jsonify({"startAt": start, "maxResults": size, "total": len(ordered),
                        "comments": out})  # fmt: skip

    def _feedback(self, ref: str) -> Any:
        iid = self._issue(ref)
        if iid is None or iid not in self.feedback:
            return jsonify(errorMessage="No feedback found for this request.",
                           i18nErrorMessage={"i18nKey": "sd.feedback.not.found",
                                             "parameters": []}), 404  # fmt: skip
        return jsonify(self.feedback[iid])


def _split_and(text: str) -> list[str]:
    """A JQL conjunction's clauses (``AND`` outside parentheses and quotes)."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text[i : i + 5].upper() == " AND ":
            parts.append(text[start:i])
            start = i = i + 5
            continue
        i += 1
    parts.append(text[start:])
    return parts
