"""A fake Gmail API v1 for one mailbox, serving what HELPDESK-APIS.md ("GMAIL API v1")
describes, to the field name, as a token holding only the ``gmail.metadata`` scope sees it.

Served: ``POST /token`` (the refresh-token grant: ``grant_type=refresh_token``,
``client_id``, ``client_secret``, ``refresh_token`` as a form; ``{"access_token",
"expires_in":3599,"scope","token_type":"Bearer"}``), every other request needing
``Authorization: Bearer <token>`` (else 401 ``authError`` "Invalid Credentials");
``GET /gmail/v1/users/{userId}/profile`` (``emailAddress``, ``messagesTotal``,
``threadsTotal``, ``historyId`` as a string); ``.../labels``; ``.../messages`` (``labelIds``
repeated, all must match; ``maxResults`` default 100, at most 500; ``pageToken``; newest
first; items hold only ``id`` and ``threadId``; ``q`` refused with 403 "Metadata scope does
not support 'q' parameter"); ``.../messages/{id}`` (only ``format=minimal|metadata``, 403 for
``full``/``raw``; ``metadataHeaders`` matched in any case; ``internalDate`` epoch ms as a
string); ``.../history`` (``startHistoryId`` required, ``historyTypes``, ``labelId``,
``maxResults``, ``pageToken``; records in increasing ``id`` with ``messages`` and the typed
``messagesAdded``/``labelsAdded``/``labelsRemoved`` holding ``id`` and ``threadId`` (and
``labelIds`` on added messages, as reported); **no ``history`` key** when nothing changed;
404 ``notFound`` for an expired or unknown start). History ids grow with random gaps.

Served as guessed (UNCONFIRMED in the doc): a refused refresh token (400
``{"error":"invalid_grant","error_description":"Token has been expired or revoked."}``, the
OAuth 2.0 error shape), the 404 body's ``errors[]``/``status``, and a ``Retry-After`` header
on 429 (Gmail's own 403 ``userRateLimitExceeded`` carries the time in its message instead).

Faults on demand: :meth:`fail` (an HTTP status or "truncate" for the next requests whose
path contains a text), :meth:`limit` (429 with ``Retry-After``, or 403
``userRateLimitExceeded`` with "Retry after <time>" in the message, once a window's budget is
spent; requests before the wait is over are counted in ``early``), :meth:`forget_history`
(history before now expires) and :meth:`revoke`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import math
import random
import secrets
import threading
from collections.abc import Iterable
from typing import Any

from flask import Flask, jsonify, request

from tests.fakes.faults import Faults
from tests.fakes.scenario import Story

UTC = dt.UTC
SCOPE = "https://www.googleapis.com/auth/gmail.metadata"
REASONS = {400: ("badRequest", "INVALID_ARGUMENT"), 401: ("authError", "UNAUTHENTICATED"),
           403: ("forbidden", "PERMISSION_DENIED"), 404: ("notFound", "NOT_FOUND"),
           429: ("rateLimitExceeded", "RESOURCE_EXHAUSTED"), 500: ("backendError", "INTERNAL"),
           502: ("backendError", "INTERNAL"), 503: ("backendError", "UNAVAILABLE")}  # fmt: skip
MAILBOX = "support@acme.test"
AGENT = "ann@acme.test"


def error(code: int, message: str, reason: str | None = None, domain: str = "global") -> Any:
    """The v1 error shape: ``{"error":{"code","message","errors":[{domain,reason,message}],
    "status"}}``."""
    why, status = REASONS.get(code, ("backendError", "UNKNOWN"))
    body = {"error": {"code": code, "message": message,
                      "errors": [{"message": message, "domain": domain,
                                  "reason": reason or why}],
                      "status": status}}  # fmt: skip
    return jsonify(body), code


class FakeGmail(Faults):
    def __init__(
        self,
        client_id: str = "gm-client.apps.googleusercontent.com",
        client_secret: str = "gm-client-secret",
        refresh_token: str = "1//gm-refresh",
        address: str = MAILBOX,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_tokens = {refresh_token}
        self.address = address
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.labels: dict[str, dict[str, Any]] = {
            name: {"id": name, "name": name, "type": "system"}
            for name in ("INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "UNREAD", "IMPORTANT")
        }
        self.messages: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.odd: dict[str, dict[str, Any]] = {}  # message id -> fields served instead
        self.history_id = 100_000
        self.oldest_history = self.history_id  # a start before this has expired
        self._random = random.Random(7)
        self._ids = itertools.count(0x18D0000000000000)
        self.limit_status = 429
        self.log: list[str] = []
        self.lock = threading.RLock()
        self.app = self._build()

    # -- the data ------------------------------------------------------------------------

    def _next_history(self) -> int:
        self.history_id += self._random.randint(1, 9)  # increasing, with gaps
        return self.history_id

    def label(self, name: str) -> str:
        lid = f"Label_{len(self.labels) + 1}"
        self.labels[lid] = {
            "id": lid,
            "name": name,
            "type": "user",
            "messageListVisibility": "show",
            "labelListVisibility": "labelShow",
        }
        return lid

    def deliver(
        self,
        when: dt.datetime,
        sender: str,
        to: str,
        subject: str,
        *,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        reply_to: str | None = None,
        thread: str | None = None,
        message_id: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        date: str | None = None,
    ) -> str:
        """A message arriving at ``when`` (its internalDate); a reply (``reply_to`` = a
        message's id here) joins that message's thread and names it in its headers."""
        gid = format(next(self._ids), "x")
        parent = self.messages.get(reply_to or "")
        mid = message_id if message_id is not None else f"<{gid}@mail.test>"
        headers = [("From", sender), ("To", to), ("Subject", subject),
                   ("Date", date if date is not None else email.utils.format_datetime(when)),
                   ("Message-ID", mid)]  # fmt: skip
        if parent is not None:
            refs = _header(parent, "References")
            own = _header(parent, "Message-ID")
            headers += [("In-Reply-To", own), ("References", f"{refs} {own}".strip())]
        headers += list(extra)
        headers.insert(0, ("Received", "from mx.test by mx.google.com"))  # never asked for
        thread_id = thread or (parent["threadId"] if parent else gid)
        with self.lock:
            hid = self._next_history()
            self.messages[gid] = {
                "id": gid, "threadId": thread_id, "labelIds": list(labels),
                "snippet": "…", "historyId": str(hid), "sizeEstimate": 4200,
                "internalDate": str(int(when.timestamp() * 1000)),
                "payload": {"partId": "", "mimeType": "multipart/alternative", "filename": "",
                            "headers": [{"name": n, "value": v} for n, v in headers],
                            "body": {"size": 0}},
            }  # fmt: skip
            ref = {"id": gid, "threadId": thread_id}
            self.history.append(
                {
                    "id": str(hid),
                    "messages": [ref],
                    "messagesAdded": [{"message": {**ref, "labelIds": list(labels)}}],
                }
            )
        return gid

    def relabel(self, gid: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        with self.lock:
            message = self.messages[gid]
            ref = {"id": gid, "threadId": message["threadId"]}
            added = [x for x in add if x not in message["labelIds"]]
            removed = [x for x in remove if x in message["labelIds"]]
            message["labelIds"] = [x for x in message["labelIds"] if x not in removed] + added
            hid = self._next_history()
            message["historyId"] = str(hid)
            record: dict[str, Any] = {"id": str(hid), "messages": [ref]}
            if added:
                record["labelsAdded"] = [{"message": ref, "labelIds": added}]
            if removed:
                record["labelsRemoved"] = [{"message": ref, "labelIds": removed}]
            self.history.append(record)

    def forget_history(self) -> None:
        """History older than now expires: a start before now gets a 404."""
        with self.lock:
            self.oldest_history = self.history_id + 1
            self.history.clear()

    def tell(self, stories: Iterable[Story], solved: str, until: dt.datetime) -> None:
        """The scenario as mail, up to ``until`` (call again with a later time to go on):
        a customer's message arrives in the inbox, an agent's reply and the team's
        auto-reply (``Auto-Submitted: auto-replied``) are sent mail, each a reply to the
        thread's last message; ``solved`` is labelled on the thread's last message.
        Mail cannot tell: internal notes, priorities and their changes, ratings, channels
        other than email, and statuses other than solved (pending and open follow from who
        wrote last); those steps are left out."""
        told: dict[str, dict[str, Any]] = self.__dict__.setdefault("_told", {})
        due = sorted(
            (step.when, n, k, story)
            for n, story in enumerate(stories)
            for k, step in enumerate(story.steps)
            if step.when <= until and k >= told.get(story.key, {}).get("n", 0)
        )  # across stories in time order, as mail arrives
        for _, _, k, story in due:
            step, done = story.steps[k], told.setdefault(story.key, {"n": 0, "last": None})
            done["n"], last = k + 1, done["last"]
            customer = f"{story.key}@customer.test"
            if step.kind == "status" and step.value == "solved" and last:
                self.relabel(last, add=[solved])
            if step.kind != "message" or not step.public:
                continue
            subject = story.subject if last is None else f"Re: {story.subject}"
            if step.who == "customer":
                last = self.deliver(step.when, customer, self.address, subject, reply_to=last)
            else:
                extra = [("Auto-Submitted", "auto-replied")] if step.who == "system" else []
                sender = self.address if step.who == "system" else AGENT
                last = self.deliver(step.when, sender, customer, subject, reply_to=last,
                                    labels=["SENT"], extra=extra)  # fmt: skip
            done["last"] = last

    # -- faults --------------------------------------------------------------------------

    def limit(self, every: int, retry_after: int = 1, status: int = 429) -> None:
        """Allow ``every`` requests per window; then ``status`` (429, or 403
        ``userRateLimitExceeded``) until the window has passed."""
        super().limit(every, retry_after)
        self.limit_status = status

    def revoke(self) -> None:
        """The user revoked slamon's access: its refresh and access tokens stop working."""
        self.refresh_tokens.clear()
        self.tokens.clear()

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = self._flask("fake-gmail")
        users = "/gmail/v1/users/<user>"
        app.add_url_rule("/token", view_func=self._token, methods=["POST"])
        app.add_url_rule(f"{users}/profile", view_func=self._profile)
        app.add_url_rule(f"{users}/labels", view_func=self._labels)
        app.add_url_rule(f"{users}/messages", view_func=self._list)
        app.add_url_rule(f"{users}/messages/<gid>", view_func=self._get)
        app.add_url_rule(f"{users}/history", view_func=self._history)
        app.register_error_handler(404, lambda _: error(404, "Requested entity was not found."))
        return app

    def _logged(self) -> Any:
        return f"{request.method} {request.full_path}"

    def _too_many(self, wait: float) -> Any:
        if self.limit_status == 403:
            until = dt.datetime.now(UTC) + dt.timedelta(seconds=wait)
            text = ("User-rate limit exceeded.  Retry after "
                    f"{until.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z")  # fmt: skip
            return error(403, text, "userRateLimitExceeded", "usageLimits")
        response, status = error(429, "Too many concurrent requests for user.",
                                 "rateLimitExceeded")  # fmt: skip
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response, status

    def _failed(self, status: int) -> Any:
        return error(status, "Backend Error" if status >= 500 else "error")

    def _check(self) -> Any:
        if request.path == "/token":
            return None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.tokens:
            body = {"error": {"code": 401, "message": "Invalid Credentials",
                              "errors": [{"message": "Invalid Credentials", "domain": "global",
                                          "reason": "authError", "locationType": "header",
                                          "location": "Authorization"}],
                              "status": "UNAUTHENTICATED"}}  # fmt: skip
            return jsonify(body), 401
        user = (request.view_args or {}).get("user")
        if user not in (None, "me", self.address):
            return error(403, "Delegation denied for " + self.address, "forbidden")
        return None

    def _token(self) -> Any:
        form = request.form
        self.token_requests += 1
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return jsonify(error="unauthorized_client",
                           error_description="Client is unauthorized to retrieve access tokens "
                           "using this method, or client not authorized for any of the scopes "
                           "requested."), 401  # fmt: skip
        if form.get("grant_type") != "refresh_token":
            return jsonify(error="unsupported_grant_type"), 400
        if form.get("refresh_token") not in self.refresh_tokens:
            return jsonify(error="invalid_grant",
                           error_description="Token has been expired or revoked."), 400  # fmt: skip
        token = "ya29." + secrets.token_hex(16)
        self.tokens.add(token)
        return jsonify(access_token=token, expires_in=3599, scope=SCOPE, token_type="Bearer")

    def _profile(self, user: str) -> Any:
        with self.lock:
            return jsonify(emailAddress=self.address, messagesTotal=len(self.messages),
                           threadsTotal=len({m["threadId"] for m in self.messages.values()}),
                           historyId=str(self.history_id))  # fmt: skip

    def _labels(self, user: str) -> Any:
        keep = ("id", "name", "messageListVisibility", "labelListVisibility", "type")
        return jsonify(labels=[{k: v for k, v in label.items() if k in keep}
                               for label in self.labels.values()])  # fmt: skip

    def _size(self) -> int | Any:
        size = request.args.get("maxResults", 100, type=int)
        if not 1 <= size <= 500:
            return error(400, "Invalid maxResults", "invalidArgument")
        return size

    def _list(self, user: str) -> Any:
        if "q" in request.args:
            return error(403, "Metadata scope does not support 'q' parameter", "forbidden")
        size = self._size()
        if not isinstance(size, int):
            return size
        wanted = request.args.getlist("labelIds")
        with self.lock:
            found = [m for m in self.messages.values()
                     if all(x in m["labelIds"] for x in wanted)
                     and not ({"SPAM", "TRASH"} & set(m["labelIds"]))]  # fmt: skip
            found.sort(key=lambda m: (int(m["internalDate"]), m["id"]), reverse=True)
        offset = int(request.args.get("pageToken", "0") or 0)
        chunk = found[offset : offset + size]
        body: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if chunk:
            body["messages"] = [{"id": m["id"], "threadId": m["threadId"]} for m in chunk]
        if offset + size < len(found):
            body["nextPageToken"] = str(offset + size)
        return jsonify(body)

    def _get(self, user: str, gid: str) -> Any:
        form = request.args.get("format", "full")
        if form in ("full", "raw"):
            return error(403, f"Metadata scope doesn't allow format {form.upper()}", "forbidden")
        with self.lock:
            message = self.messages.get(gid)
            if message is None:
                return error(404, "Requested entity was not found.")
            out = {k: v for k, v in message.items() if k != "payload"}
            if form == "metadata":
                names = {h.lower() for h in request.args.getlist("metadataHeaders")}
                headers = [h for h in message["payload"]["headers"]
                           if not names or h["name"].lower() in names]  # fmt: skip
                out["payload"] = {"mimeType": message["payload"]["mimeType"], "headers": headers}
            out.update(self.odd.get(gid, {}))
        return jsonify(out)

    def _history(self, user: str) -> Any:
        start = request.args.get("startHistoryId", type=int)
        if start is None:
            return error(400, "Missing required parameter: startHistoryId", "required")
        size = self._size()
        if not isinstance(size, int):
            return size
        with self.lock:
            if start < self.oldest_history or start > self.history_id or start == 0:
                return error(404, "Requested entity was not found.")
            kinds = set(request.args.getlist("historyTypes"))
            label = request.args.get("labelId")
            records = []
            for record in self.history:
                if int(record["id"]) <= start:
                    continue
                kept = {k: v for k, v in record.items()
                        if k in ("id", "messages") or _kind(k) in kinds or not kinds}  # fmt: skip
                if label is not None and not any(
                    label in self.messages.get(m["id"], {}).get("labelIds", [])
                    for m in record["messages"]
                ):
                    continue
                if len(kept) > 2:
                    records.append(kept)
            current = str(self.history_id)
        offset = int(request.args.get("pageToken", "0") or 0)
        body: dict[str, Any] = {"historyId": current}
        if records[offset : offset + size]:
            body["history"] = records[offset : offset + size]
        if offset + size < len(records):
            body["nextPageToken"] = str(offset + size)
        return jsonify(body)


def _kind(key: str) -> str:
    return {"messagesAdded": "messageAdded", "messagesDeleted": "messageDeleted",
            "labelsAdded": "labelAdded", "labelsRemoved": "labelRemoved"}.get(key, key)  # fmt: skip


def _header(message: dict[str, Any], name: str) -> str:
    return next((h["value"] for h in message["payload"]["headers"] if h["name"] == name), "")
