"""A fake Help Scout Mailbox API 2.0, serving what HELPDESK-APIS.md ("PART B — HELP SCOUT
MAILBOX API 2.0") describes, to the field name.

Served: OAuth2 client credentials (``POST /v2/oauth2/token`` with ``grant_type``,
``client_id``, ``client_secret`` as a form, JSON or query; ``{"token_type":"bearer",
"access_token":…,"expires_in":172800}``, no refresh token), every other request needing
``Authorization: Bearer <token>``; ``GET /v2/conversations`` (``status`` default ``active``,
``all``, ``mailbox``, ``modifiedSince``, ``sortField``/``sortOrder``, ``page``; 25 a page, no
size parameter; HAL ``_embedded.conversations``, **omitted on an empty page**, ``_links``
with ``next`` only when there is one, ``page`` {size, totalElements, totalPages, number});
the v2 conversation object (no ``modifiedAt``: the fake keeps it to itself);
``GET /v2/conversations/{id}/threads`` (50 a page, newest first; 301 + Location for a merged
conversation, 404 for a deleted one) and ``GET /v2/mailboxes``. Deleted conversations stay in
the ``status=all`` list with ``state: deleted`` (whether they do is UNCONFIRMED).

Ratings: ``GET /v2/ratings/{id}`` (the confirmed object: ``rating`` great|okay|not_good|
unknown, ``conversationId``, ``threadId``, ``createdAt`` and ``modifiedAt`` without a Z, ...)
and the Plus/Pro report ``GET /v2/reports/happiness/ratings?start=&end=&page=`` (not HAL:
``results`` rows of exactly ``number, id, type, threadid, threadCreatedAt, ratingId,
ratingCustomerId, ratingCustomerName, ratingComments, ratingCreatedAt, ratingUserId,
ratingUserName`` — no value key, since its name is UNCONFIRMED — and ``page``, ``pages``,
``count``; ``mailboxes``, ``sortField`` number|modifiedAt, ``sortOrder`` ASC|DESC).
``reports = False`` is a plan without reports (Standard): the report answers 403;
``ids_as_values = True`` serves ``ratingId`` as the value 1 great, 2 ok, 3 not good, as one
third party documents the report (the meaning of ``ratingId`` there is UNCONFIRMED).

Unconfirmed bodies, served as guessed: the token endpoint's refusal (401
``{"error":"invalid_client",…}``), the API's 401 (``{"message":"Unauthorized"}``), the
report's 403 (``{"message":"Forbidden"}``) and 400 without ``start``/``end``; that the report
selects rows by ``ratingCreatedAt`` within ``start``..``end`` and pages 50 rows.

Faults on demand: :meth:`fail` (an HTTP status or "truncate" for requests whose path contains
a text), :meth:`limit` (429 ``{"message":"API rate limit exceeded"}`` with
``X-RateLimit-Retry-After`` once the per-window budget is spent — writes count 2 — counting
requests that came before the wait was over in ``early``), :meth:`expire_tokens` and
:meth:`revoke`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import secrets
import threading
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.fakes.faults import Faults
from tests.fakes.scenario import Step, Story

UTC = dt.UTC
STATUSES = {"open": "active", "pending": "pending", "solved": "closed", "new": "active"}
RATINGS = {5: "great", 3: "okay", 1: "not_good"}  # csat score -> Help Scout's value
VALUE_IDS = {"great": 1, "okay": 2, "not_good": 3, "unknown": 0}
ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeHelpScout(Faults):
    WRITE_COST = 2

    def __init__(
        self,
        app_id: str = "hs-app-id",
        app_secret: str = "hs-app-secret",
    ) -> None:
        super().__init__()
        self.app_id, self.app_secret = app_id, app_secret
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.expires_in = 172800
        self.page_size, self.thread_page_size = 25, 50
        self.mailboxes: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, dict[str, Any]] = {}
        self.threads: dict[int, list[dict[str, Any]]] = {}
        self.modified: dict[int, tuple[dt.datetime, int]] = {}
        self.merged: dict[int, int] = {}
        self.ratings: dict[int, dict[str, Any]] = {}
        self.reports = True  # the plan has reports (Plus/Pro)
        self.report_page_size = 50
        self.ids_as_values = False
        self._rating_ids = itertools.count(700_001)
        self.agent = {"id": 99, "type": "user", "first": "Ann", "last": "Agent",
                      "email": "ann@acme.test"}  # fmt: skip
        self._ids = itertools.count(1001)
        self._thread_ids = itertools.count(500_001)
        self._updates = itertools.count(1)
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.app = self._build()

    # -- the data ------------------------------------------------------------------------

    def mailbox(self, name: str) -> int:
        mid = next(self._ids)
        self.mailboxes[mid] = {"id": mid, "name": name, "slug": name.lower(),
                               "email": f"{name.lower()}@acme.test",
                               "createdAt": "2024-01-01T00:00:00Z",
                               "updatedAt": "2024-01-01T00:00:00Z"}  # fmt: skip
        return mid

    def create(
        self,
        when: dt.datetime,
        mailbox: int,
        customer: str,
        *,
        by: str = "customer",
        subject: str = "Help",
        kind: str = "email",
        tags: Iterable[str] = (),
        status: str = "active",
    ) -> int:
        """A new conversation with its first thread: the customer's (``by`` customer), an
        agent's outbound message (``user``) or a workflow's (``workflow``)."""
        cid = next(self._ids)
        person = {"id": next(self._ids), "type": "customer", "email": customer}
        self.conversations[cid] = {
            "id": cid, "number": cid - 1000, "threads": 0, "type": kind, "folderId": 11,
            "status": status, "state": "published", "subject": subject, "preview": subject,
            "mailboxId": mailbox, "assignee": None,
            "createdBy": person if by == "customer" else dict(self.agent),
            "createdAt": iso(when), "closedBy": 0, "closedByUser": None, "closedAt": None,
            "userUpdatedAt": None, "customerWaitingSince": {},
            "source": {"type": kind, "via": "customer" if by == "customer" else "user"},
            "tags": [{"id": 9000 + n, "color": "#929499", "tag": t} for n, t in enumerate(tags)],
            "cc": [], "bcc": [], "primaryCustomer": person, "customFields": [],
        }  # fmt: skip
        self.threads[cid] = []
        first = "customer" if by == "customer" else "message"
        self.thread(cid, when, first, by=by, status=status)
        return cid

    def thread(
        self,
        cid: int,
        when: dt.datetime,
        kind: str,
        *,
        by: str = "user",
        status: str = "nochange",
        state: str = "published",
    ) -> int:
        """A thread: ``kind`` customer, message, note, lineitem, ...; ``by`` customer, user
        or workflow (a user's thread whose action is an automatic workflow)."""
        convo = self.conversations[cid]
        person = convo["primaryCustomer"] if by == "customer" else self.agent
        tid = next(self._thread_ids)
        action = {"type": "default", "text": "", "associatedEntities": {}}
        if by == "workflow":
            action = {"type": "automatic-workflow", "text": "Workflow Auto reply ran",
                      "associatedEntities": {}}  # fmt: skip
        self.threads[cid].append({
            "id": tid, "type": kind, "status": status, "state": state, "action": action,
            "body": "…", "source": {"type": "email", "via": "customer" if by == "customer"
                                    else "user"},
            "customer": {"id": convo["primaryCustomer"]["id"]},
            "createdBy": {"id": person["id"], "type": person["type"],
                          "email": person["email"]},
            "assignedTo": None, "savedReplyId": 0, "to": [], "cc": [], "bcc": [],
            "createdAt": iso(when), "openedAt": None,
        })  # fmt: skip
        convo["threads"] = len(self.threads[cid])
        if status != "nochange":
            convo["status"] = status
            if status == "closed":
                convo["closedAt"], convo["closedBy"] = iso(when), self.agent["id"]
                convo["closedByUser"] = dict(self.agent)
        if by == "customer":
            convo["customerWaitingSince"] = {"time": iso(when), "friendly": "just now",
                                             "latestReplyFrom": "customer"}  # fmt: skip
        else:
            convo["userUpdatedAt"] = iso(when)
        self._touch(cid, when)
        return tid

    def set_status(self, cid: int, when: dt.datetime, status: str) -> int:
        """A user's status change: a lineitem thread that carries the new status."""
        return self.thread(cid, when, "lineitem", status=status)

    def tag(self, cid: int, when: dt.datetime, *tags: str) -> None:
        """New tags: no thread, only the modification time moves."""
        self.conversations[cid]["tags"] = [{"id": 9000 + n, "color": "#929499", "tag": t}
                                           for n, t in enumerate(tags)]  # fmt: skip
        self.conversations[cid]["userUpdatedAt"] = iso(when)
        self._touch(cid, when)

    def delete(self, cid: int, when: dt.datetime) -> None:
        self.conversations[cid]["state"] = "deleted"
        self._touch(cid, when)

    def merge(self, cid: int, into: int, when: dt.datetime) -> None:
        self.merged[cid] = into
        self.conversations[cid]["status"] = "closed"
        self.conversations[cid]["userUpdatedAt"] = iso(when)
        self._touch(cid, when)

    def rate(self, cid: int, when: dt.datetime, value: str, *, comments: str = "") -> int:
        """The customer rates the conversation's latest agent thread (great, okay,
        not_good or unknown)."""
        convo = self.conversations[cid]
        threads = sorted(self.threads[cid], key=lambda t: (t["createdAt"], t["id"]))
        by_user = [t for t in threads if t["createdBy"]["type"] == "user"] or threads
        rid = next(self._rating_ids)
        person = convo["primaryCustomer"]
        self.ratings[rid] = {
            "id": rid,
            "customer": {"id": person["id"], "email": person["email"], "firstName": "Happy",
                         "lastName": "Customer"},
            "threadId": by_user[-1]["id"], "conversationId": cid,
            "conversationNumber": convo["number"], "mailboxId": convo["mailboxId"],
            "rating": value,
            "user": {"id": self.agent["id"], "firstName": self.agent["first"],
                     "lastName": self.agent["last"], "email": self.agent["email"]},
            "comments": comments,
            "createdAt": _no_z(when), "modifiedAt": _no_z(when),
        }  # fmt: skip
        return rid

    def rate_again(self, rid: int, when: dt.datetime, value: str, comments: str = "") -> None:
        """The customer changes a rating (and its comment)."""
        self.ratings[rid].update(rating=value, comments=comments, modifiedAt=_no_z(when))

    def load(self, stories: Iterable[Story]) -> dict[str, int]:
        """The scenario's stories as conversations: a mailbox per queue, priorities as tags
        (``normal`` untagged). A status at the instant of a message rides on its thread, a
        status alone is a lineitem. Not told (Help Scout cannot): priority changes after
        the creation, and channels other than email, chat and phone. csat ratings (5, 3, 1)
        are rated great, okay, not_good."""
        boxes: dict[str, int] = {}
        ids = {}
        for story in stories:
            box = boxes.get(story.queue) or boxes.setdefault(story.queue, self.mailbox(story.queue))
            steps = list(story.steps)
            who = {"customer": "customer", "agent": "user", "system": "workflow"}
            tags = [] if story.priority == "normal" else [story.priority]
            kind = story.channel if story.channel in ("email", "chat", "phone") else "email"
            first = steps[0] if steps and steps[0].kind == "message" else None
            if first is None or first.when != story.created:
                raise ValueError(f"{story.key}: a conversation starts with a message")
            cid = ids[story.key] = self.create(
                story.created, box, f"{story.key}@customer.test", by=who[story.by],
                subject=story.subject, kind=kind, tags=tags,
            )  # fmt: skip
            for group in _threads_of(steps[1:]):
                head = group[0]
                if head.kind == "rating" and head.value == "csat":
                    self.rate(cid, head.when, RATINGS[head.score])
                if head.kind in ("rating", "priority"):
                    continue
                status = next((STATUSES[s.value] for s in group if s.kind == "status"), None)
                if head.kind == "status":
                    self.set_status(cid, head.when, STATUSES[head.value])
                    continue
                thread_kind = "customer" if head.who == "customer" else "message"
                if not head.public:
                    thread_kind = "note"
                self.thread(cid, head.when, thread_kind, by=who[head.who],
                            status=status or "nochange")  # fmt: skip
        return ids

    def _touch(self, cid: int, when: dt.datetime) -> None:
        self.modified[cid] = (when, next(self._updates))

    # -- faults --------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every access token handed out so far stops working (its 48 h are over)."""
        self.tokens.clear()

    def revoke(self) -> None:
        self.tokens.clear()
        self.app_secret = secrets.token_hex(8)  # the app's secret was regenerated

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = self._flask("fake-helpscout")
        app.add_url_rule("/v2/oauth2/token", view_func=self._token, methods=["POST"])
        app.add_url_rule("/v2/conversations", view_func=self._list)
        app.add_url_rule("/v2/conversations/<int:cid>", view_func=self._conversation)
        app.add_url_rule("/v2/conversations/<int:cid>/threads", view_func=self._threads)
        app.add_url_rule("/v2/mailboxes", view_func=self._mailboxes)
        app.add_url_rule("/v2/ratings/<int:rid>", view_func=self._rating)
        app.add_url_rule("/v2/reports/happiness/ratings", view_func=self._report)
        app.register_error_handler(404, lambda _: (jsonify(message="Not Found"), 404))
        return app

    def _too_many(self, wait: float) -> Any:
        headers = {"X-RateLimit-Retry-After": str(math.ceil(wait)),
                   "X-RateLimit-Limit-Minute": str(self.every),
                   "X-RateLimit-Remaining-Minute": "0"}  # fmt: skip
        return jsonify(message="API rate limit exceeded"), 429, headers

    def _failed(self, status: int) -> Any:
        if status == 404:
            return jsonify(message="Not Found"), 404
        return ERRORS.get(status, "error"), status

    def _check(self) -> Any:
        if request.path == "/v2/oauth2/token":
            return None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.tokens:
            return jsonify(message="Unauthorized"), 401
        return None

    def _logged(self) -> Any:
        return f"{request.method} {request.full_path}"

    def _headers(self, response: Response) -> None:
        if response.mimetype == "application/json":
            response.headers["Content-Type"] = "application/hal+json"
        if self.every is not None and response.status_code != 429:
            left = max(0, self.every - self.served)
            response.headers["X-RateLimit-Limit-Minute"] = str(self.every)
            response.headers["X-RateLimit-Remaining-Minute"] = str(left)

    def _token(self) -> Any:
        given = {**request.args, **request.form, **(request.get_json(silent=True) or {})}
        self.token_requests += 1
        if given.get("grant_type") != "client_credentials":
            return jsonify(error="unsupported_grant_type"), 400
        if given.get("client_id") != self.app_id or given.get("client_secret") != self.app_secret:
            return jsonify(error="invalid_client",
                           error_description="Bad client credentials"), 401  # fmt: skip
        token = secrets.token_hex(16)
        self.tokens.add(token)
        response = jsonify(token_type="bearer", access_token=token, expires_in=self.expires_in)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _list(self) -> Any:
        args = request.args
        status = args.get("status", "active")
        boxes = {int(m) for m in args.get("mailbox", "").split(",") if m.strip()}
        since = args.get("modifiedSince")
        with self.lock:
            found = [
                c for cid, c in self.conversations.items()
                if (status == "all" or c["status"] == status)
                and (not boxes or c["mailboxId"] in boxes)
                and (since is None or iso(self.modified[cid][0]) >= since)
            ]  # fmt: skip
            if args.get("sortField", "createdAt") == "modifiedAt":
                found.sort(key=lambda c: self.modified[c["id"]])
            else:
                found.sort(key=lambda c: (c["createdAt"], c["id"]))
            if args.get("sortOrder", "desc") == "desc":
                found.reverse()
            items = [self._public(c) for c in found]
        return self._hal(items, "conversations", self.page_size)

    def _public(self, convo: dict[str, Any]) -> dict[str, Any]:
        base = f"{request.host_url}v2/conversations/{convo['id']}"
        links = {"self": {"href": base}, "threads": {"href": f"{base}/threads"},
                 "mailbox": {"href": f"{request.host_url}v2/mailboxes/{convo['mailboxId']}"},
                 "web": {"href": f"https://secure.helpscout.net/conversation/{convo['id']}/"
                                 f"{convo['number']}"}}  # fmt: skip
        return {**convo, "_links": links}

    def _conversation(self, cid: int) -> Any:
        if cid in self.merged:
            target = f"{request.host_url}v2/conversations/{self.merged[cid]}"
            return Response("", 301, {"Location": target})
        with self.lock:
            convo = self.conversations.get(cid)
            if convo is None or convo["state"] == "deleted":
                return jsonify(message="Not Found"), 404
            return jsonify(self._public(convo))

    def _threads(self, cid: int) -> Any:
        if cid in self.merged:
            target = f"{request.host_url}v2/conversations/{self.merged[cid]}/threads"
            return Response("", 301, {"Location": target})
        convo = self.conversations.get(cid)
        if convo is None or convo["state"] == "deleted":
            return jsonify(message="Not Found"), 404
        newest_first = sorted(self.threads[cid], key=lambda t: (t["createdAt"], t["id"]))[::-1]
        return self._hal(newest_first, "threads", self.thread_page_size)

    def _mailboxes(self) -> Any:
        return self._hal(list(self.mailboxes.values()), "mailboxes", 50)

    def _rating(self, rid: int) -> Any:
        rating = self.ratings.get(rid)
        if rating is None:
            return jsonify(message="Not Found"), 404
        return jsonify(rating)

    def _report(self) -> Any:
        if not self.reports:
            return jsonify(message="Forbidden"), 403
        args = request.args
        if not args.get("start") or not args.get("end"):
            return jsonify(message="Validation error"), 400
        start, end = _instant(args["start"]), _instant(args["end"])
        boxes = {int(m) for m in args.get("mailboxes", "").split(",") if m.strip()}
        with self.lock:
            rated = [r for r in self.ratings.values()
                     if start <= _instant(r["createdAt"]) <= end
                     and (not boxes or r["mailboxId"] in boxes)]  # fmt: skip
            field = args.get("sortField", "modifiedAt")
            key = "conversationNumber" if field == "number" else "modifiedAt"
            rated.sort(key=lambda r: (r[key], r["id"]), reverse=args.get("sortOrder") == "DESC")
            rows = [self._row(r) for r in rated]
        size = self.report_page_size
        page = request.args.get("page", 1, type=int)
        pages = math.ceil(len(rows) / size)
        chunk = rows[(page - 1) * size : page * size]
        return jsonify(results=chunk, page=page, pages=pages, count=len(rows))

    def _row(self, rating: dict[str, Any]) -> dict[str, Any]:
        convo = self.conversations[rating["conversationId"]]
        thread = next(t for t in self.threads[convo["id"]] if t["id"] == rating["threadId"])
        customer, user = rating["customer"], rating["user"]
        return {
            "number": convo["number"], "id": convo["id"], "type": convo["type"],
            "threadid": thread["id"], "threadCreatedAt": thread["createdAt"],
            "ratingId": VALUE_IDS[rating["rating"]] if self.ids_as_values else rating["id"],
            "ratingCustomerId": customer["id"],
            "ratingCustomerName": f"{customer['firstName']} {customer['lastName']}",
            "ratingComments": rating["comments"],
            "ratingCreatedAt": rating["createdAt"] + "Z",
            "ratingUserId": user["id"],
            "ratingUserName": f"{user['firstName']} {user['lastName']}",
        }  # fmt: skip

    def _hal(self, items: list[dict[str, Any]], key: str, size: int) -> Any:
        page = request.args.get("page", 1, type=int)
        total = math.ceil(len(items) / size)
        chunk = items[(page - 1) * size : page * size]
        query = {k: v for k, v in request.args.items() if k != "page"}
        base = request.base_url + "?" + "".join(f"{k}={v}&" for k, v in query.items())
        links: dict[str, Any] = {"self": {"href": f"{base}page={page}"},
                                 "first": {"href": f"{base}page=1"},
                                 "page": {"href": request.base_url + "{?page}",
                                          "templated": True}}  # fmt: skip
        if total:
            links["last"] = {"href": f"{base}page={total}"}
        if page < total:
            links["next"] = {"href": f"{base}page={page + 1}"}
        if page > 1:
            links["previous"] = {"href": f"{base}page={page - 1}"}
        body: dict[str, Any] = {"_links": links, "page": {
            "size": size, "totalElements": len(items), "totalPages": total,
            "number": page if items else 0}}  # fmt: skip
        if chunk:
            body["_embedded"] = {key: chunk}  # an empty page has no _embedded at all
        return jsonify(body)


def _no_z(when: dt.datetime) -> str:
    """The ratings doc's time: UTC without the Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _instant(value: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(value)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _threads_of(steps: Iterable[Step]) -> list[list[Step]]:
    """Steps as threads: a message starts one, and a status at the same instant rides on
    it (a reply that also sets the status); anything else stands alone."""
    threads: list[list[Step]] = []
    for step in steps:
        head = threads[-1][0] if threads else None
        if (head is not None and head.kind == "message" and head.when == step.when
                and step.kind == "status"):  # fmt: skip
            threads[-1].append(step)
        else:
            threads.append([step])
    return threads
