"""A fake Microsoft Graph v1.0 for one mailbox's mail, serving what HELPDESK-APIS.md
("MICROSOFT GRAPH v1.0 MAIL") describes, to the field name.

Served: the client-credentials grant at ``POST /{tenant}/oauth2/v2.0/token`` (a form with
``client_id``, ``scope``, ``client_secret``, ``grant_type``; ``{"token_type":"Bearer",
"expires_in":3599,"ext_expires_in":3599,"access_token"}``), every other request needing
``Authorization: Bearer <token>``; ``GET /v1.0/users/{mailbox}/mailFolders`` (the root's
children, 10 a page, ``@odata.nextLink``); ``GET /v1.0/users/{mailbox}/mailFolders/{id or
well-known name}/messages/delta``: the initial request's ``$select`` and ``Prefer:
odata.maxpagesize=N`` are kept in the links, pages end in ``@odata.nextLink``
(``$skiptoken``) until the last, which holds ``@odata.deltaLink`` (``$deltatoken``). The
first round returns the messages in the folder; later rounds each message changed since
(merged: a message counted once), a message that left the folder as ``{"id",
"@removed":{"reason":"deleted"}}``, and one only read or flagged as ``id, isRead,
parentFolderId`` alone, whatever ``$select`` said. ``internetMessageHeaders`` is never
returned for Sent Items. Ids are immutable only for requests that send ``Prefer:
IdType="ImmutableId"`` (``mutable`` counts the requests that did not).

Served as guessed (UNCONFIRMED in the doc): the token endpoint's refusal (401
``{"error":"invalid_client",…}``), ``@removed`` with reason ``deleted`` for a message moved
out of a folder, and ``lastModifiedDateTime`` set by a move.

Faults on demand: :meth:`fail` (an HTTP status with Graph's error body, or "truncate"),
:meth:`limit` (429 ``TooManyRequests`` with ``Retry-After`` once a window's budget is spent;
requests before the wait is over are counted in ``early``), :meth:`expire` (every delta and
skip token forgotten: 410 ``SyncStateNotFound`` or 400 ``resyncRequired``), :meth:`echo`
(each new message of a round also comes back as a partial update in the same round) and
:meth:`revoke`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import secrets
import threading
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from flask import Flask, jsonify, request

from tests.fakes.faults import Faults
from tests.fakes.scenario import Story

UTC = dt.UTC
MAILBOX = "support@acme.test"
AGENT = "ann@acme.test"
CODES = {400: "invalidRequest", 401: "InvalidAuthenticationToken", 403: "accessDenied",
         404: "itemNotFound", 500: "generalException", 502: "badGateway",
         503: "serviceNotAvailable", 504: "gatewayTimeout"}  # fmt: skip
WELL_KNOWN = {"inbox": "Inbox", "sentitems": "Sent Items", "deleteditems": "Deleted Items",
              "drafts": "Drafts", "archive": "Archive"}  # fmt: skip


def iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error(status: int, code: str, message: str) -> Any:
    """``{"error":{"code","message","innerError":{"request-id","date"}}}``."""
    inner = {"request-id": str(uuid.uuid4()), "date": iso(dt.datetime.now(UTC))}
    return jsonify(error={"code": code, "message": message, "innerError": inner}), status


def address(who: str, name: str = "") -> dict[str, Any]:
    return {"emailAddress": {"name": name or who.split("@")[0].title(), "address": who}}


class FakeGraph(Faults):
    def __init__(
        self,
        tenant: str = "contoso-tenant",
        client_id: str = "graph-client",
        client_secret: str = "graph-secret",
        mailbox: str = MAILBOX,
    ) -> None:
        super().__init__()
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.mailbox = mailbox
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.folders: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}  # well-known name -> folder id
        for name, display in WELL_KNOWN.items():
            self.names[name] = self.folder(display)
        self.messages: dict[str, dict[str, Any]] = {}
        self.where: dict[str, str] = {}  # message id -> folder id
        self.changes: list[tuple[int, str, str, str]] = []  # (seq, folder, message, kind)
        self._seq = itertools.count(1)
        self.states: dict[str, dict[str, Any]] = {}  # delta and skip tokens
        self.expired_with: tuple[int, str] | None = None
        self.echoes = False
        self.mutable = 0  # requests without Prefer: IdType="ImmutableId"
        self.log: list[str] = []
        self.lock = threading.RLock()
        self.app = self._build()

    # -- the data ------------------------------------------------------------------------

    def folder(self, display: str) -> str:
        fid = "AQMkAD" + secrets.token_hex(6) + "AAAA=="
        self.folders[fid] = {
            "id": fid,
            "displayName": display,
            "parentFolderId": "AQMkADroot",
            "childFolderCount": 0,
            "unreadItemCount": 0,
            "totalItemCount": 0,
            "isHidden": False,
        }
        return fid

    def _log_change(self, folder: str, gid: str, kind: str) -> None:
        self.changes.append((next(self._seq), folder, gid, kind))

    def deliver(
        self,
        when: dt.datetime,
        sender: str,
        to: str,
        subject: str,
        *,
        folder: str = "inbox",
        reply_to: str | None = None,
        conversation: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        message_id: str | None = None,
    ) -> str:
        """A message at ``when`` in a folder (well-known name or id); a reply joins the
        conversation of ``reply_to`` and names it in its headers."""
        with self.lock:
            fid = self.names.get(folder, folder)
            gid = "AAkALg" + secrets.token_hex(8) + "="
            parent = self.messages.get(reply_to or "")
            mid = message_id if message_id is not None else f"<{gid[6:22]}@mail.test>"
            found = [("Message-ID", mid), ("Subject", subject), ("From", sender), ("To", to)]
            if parent is not None:
                refs = next((v for n, v in _headers(parent) if n == "References"), "")
                own = parent["internetMessageId"]
                found += [("In-Reply-To", own), ("References", f"{refs} {own}".strip())]
            found += list(headers)
            self.messages[gid] = {
                "@odata.type": "#microsoft.graph.message",
                "@odata.etag": f'W/"CQAAABYA{secrets.token_hex(4)}"',
                "id": gid, "internetMessageId": mid,
                "conversationId": conversation or (parent["conversationId"] if parent
                                                   else "AAQkAG" + secrets.token_hex(8) + "="),
                "subject": subject, "from": address(sender), "sender": address(sender),
                "toRecipients": [address(to)], "ccRecipients": [],
                "receivedDateTime": iso(when), "sentDateTime": iso(when),
                "lastModifiedDateTime": iso(when), "isRead": False, "isDraft": False,
                "parentFolderId": fid,
                "internetMessageHeaders": [{"name": n, "value": v} for n, v in found],
            }  # fmt: skip
            self.where[gid] = fid
            self._log_change(fid, gid, "created")
        return gid

    def move(self, gid: str, folder: str, when: dt.datetime) -> None:
        with self.lock:
            fid = self.names.get(folder, folder)
            old = self.where[gid]
            self.where[gid] = fid
            self.messages[gid]["parentFolderId"] = fid
            self.messages[gid]["lastModifiedDateTime"] = iso(when)
            self._log_change(old, gid, "removed")
            self._log_change(fid, gid, "created")

    def read(self, gid: str) -> None:
        with self.lock:
            self.messages[gid]["isRead"] = True
            self._log_change(self.where[gid], gid, "updated")

    def tell(self, stories: Iterable[Story], solved: str) -> dict[str, str]:
        """The scenario as mail: a customer's message arrives in the inbox (with its
        headers), an agent's reply is in Sent Items (which Graph shows without headers),
        each in the story's conversation; a story solves by moving its last inbox message
        into the ``solved`` folder at that instant. Not told: internal notes, priorities,
        ratings, channels other than email, statuses other than solved (pending and open
        follow from who wrote last), and the team's auto-replies (Exchange keeps automatic
        replies out of Sent Items). Returns each story's conversationId."""
        ids = {}
        due = sorted((step.when, n, k, story) for n, story in enumerate(stories)
                     for k, step in enumerate(story.steps))  # fmt: skip
        last: dict[str, str] = {}
        inbox: dict[str, str] = {}
        for _, _, k, story in due:
            step = story.steps[k]
            customer = f"{story.key}@customer.test"
            conversation = ids.setdefault(story.key, "AAQkAG" + secrets.token_hex(8) + "=")
            if step.kind == "status" and step.value == "solved" and story.key in inbox:
                self.move(inbox[story.key], solved, step.when)
            if step.kind != "message" or not step.public or step.who == "system":
                continue
            subject = story.subject if story.key not in last else f"Re: {story.subject}"
            if step.who == "customer":
                gid = self.deliver(
                    step.when,
                    customer,
                    self.mailbox,
                    subject,
                    reply_to=last.get(story.key),
                    conversation=conversation,
                )
                inbox[story.key] = gid
            else:
                gid = self.deliver(
                    step.when,
                    AGENT,
                    customer,
                    subject,
                    folder="sentitems",
                    reply_to=last.get(story.key),
                    conversation=conversation,
                )
            last[story.key] = gid
        return ids

    # -- faults --------------------------------------------------------------------------

    def expire(self, status: int = 410, code: str = "SyncStateNotFound") -> None:
        """Every delta and skip token handed out so far is gone."""
        with self.lock:
            self.states.clear()
            self.expired_with = (status, code)

    def echo(self) -> None:
        self.echoes = True

    def revoke(self) -> None:
        self.tokens.clear()
        self.client_secret = secrets.token_hex(8)

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = self._flask("fake-graph")
        app.add_url_rule("/<tenant>/oauth2/v2.0/token", view_func=self._token, methods=["POST"])
        app.add_url_rule("/v1.0/users/<user>/mailFolders", view_func=self._folders)
        app.add_url_rule("/v1.0/users/<user>/mailFolders/<folder>/messages/delta",
                         view_func=self._delta)  # fmt: skip
        app.register_error_handler(404, lambda _: error(404, "itemNotFound", "Not found"))
        return app

    def _logged(self) -> Any:
        return f"{request.method} {request.full_path}"

    def _too_many(self, wait: float) -> Any:
        inner = {"code": "429", "date": iso(dt.datetime.now(UTC)), "message": "Please retry after",
                 "request-id": str(uuid.uuid4()), "status": "429"}  # fmt: skip
        response = jsonify(error={"code": "TooManyRequests", "innerError": inner,
                                  "message": "Please retry again later."})  # fmt: skip
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response, 429

    def _failed(self, status: int) -> Any:
        return error(status, CODES.get(status, "generalException"), "Fault")

    def _check(self) -> Any:
        if request.path.endswith("/oauth2/v2.0/token"):
            return None
        if 'IdType="ImmutableId"' not in request.headers.get("Prefer", ""):
            self.mutable += 1
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.tokens:
            return error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        user = (request.view_args or {}).get("user")
        if user is not None and user.lower() != self.mailbox:
            return error(404, "ErrorInvalidUser",
                         f"The requested user '{user}' is invalid.")  # fmt: skip
        return None

    def _token(self, tenant: str) -> Any:
        form = request.form
        self.token_requests += 1
        if tenant != self.tenant:
            return jsonify(
                error="invalid_request",
                error_description=f"AADSTS90002: Tenant '{tenant}' not found.",
            ), 400
        if form.get("grant_type") != "client_credentials":
            return jsonify(error="unsupported_grant_type"), 400
        if form.get("scope") != "https://graph.microsoft.com/.default":
            return jsonify(error="invalid_scope"), 400
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return jsonify(
                error="invalid_client",
                error_description="AADSTS7000215: Invalid client secret provided.",
            ), 401
        token = "eyJ0" + secrets.token_hex(20)
        self.tokens.add(token)
        return jsonify(token_type="Bearer", expires_in=3599, ext_expires_in=3599,
                       access_token=token)  # fmt: skip

    def _folders(self, user: str) -> Any:
        skip = request.args.get("$skip", 0, type=int)
        listed = list(self.folders.values())
        body: dict[str, Any] = {"value": listed[skip : skip + 10]}
        if skip + 10 < len(listed):
            body["@odata.nextLink"] = f"{request.base_url}?$skip={skip + 10}"
        return jsonify(body)

    def _delta(self, user: str, folder: str) -> Any:
        fid = self.names.get(folder.lower(), folder)
        if fid not in self.folders:
            return error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        args = request.args
        size = _page_size(request.headers.get("Prefer", ""))
        with self.lock:
            if "$skiptoken" in args or "$deltatoken" in args:
                key = args.get("$skiptoken") or args.get("$deltatoken", "")
                state = self.states.get(key)
                if state is None or state["folder"] != fid:
                    status, code = self.expired_with or (410, "SyncStateNotFound")
                    generation = next(self._seq)
                    return error(status, code, f"The sync state generation is not found; "
                                 f"generation={generation};")  # fmt: skip
                if "$deltatoken" in args:  # a new round from the stored state
                    state = self._round(fid, state["seq"], state["select"], state["size"])
            else:
                select = [s for s in args.get("$select", "").split(",") if s]
                state = self._round(fid, 0, select, size)
            offset = state["offset"]
            chunk = state["items"][offset : offset + state["size"]]
            base = f"{request.base_url}?"
            body: dict[str, Any] = {
                "@odata.context": f"{request.host_url}v1.0/$metadata#Collection(message)",
                "value": chunk}  # fmt: skip
            if offset + state["size"] < len(state["items"]):
                token = secrets.token_urlsafe(12)
                self.states[token] = {**state, "offset": offset + state["size"]}
                body["@odata.nextLink"] = base + "$skiptoken=" + quote(token)
            else:
                token = secrets.token_urlsafe(12)
                self.states[token] = {"folder": fid, "seq": state["end"],
                                      "select": state["select"], "size": state["size"]}  # fmt: skip
                body["@odata.deltaLink"] = base + "$deltatoken=" + quote(token)
        response = jsonify(body)
        response.headers["Preference-Applied"] = f"odata.maxpagesize={state['size']}"
        return response

    def _round(self, fid: str, since: int, select: list[str], size: int) -> dict[str, Any]:
        """Everything a delta round from ``since`` returns, to be paged."""
        end = self.changes[-1][0] if self.changes else 0
        items: list[dict[str, Any]] = []
        if since == 0:
            for gid, where in self.where.items():
                if where == fid:
                    items.append(self._shape(gid, select))
        else:
            kinds: dict[str, set[str]] = {}
            for seq, folder, gid, kind in self.changes:
                if seq > since and folder == fid:
                    kinds.setdefault(gid, set()).add(kind)
            for gid, seen in kinds.items():
                if self.where.get(gid) != fid:
                    items.append({"@odata.type": "#microsoft.graph.message", "id": gid,
                                  "@removed": {"reason": "deleted"}})  # fmt: skip
                elif seen == {"updated"}:
                    m = self.messages[gid]
                    items.append({"@odata.type": "#microsoft.graph.message",
                                  "@odata.etag": m["@odata.etag"], "id": gid,
                                  "isRead": m["isRead"], "parentFolderId": fid})  # fmt: skip
                else:
                    items.append(self._shape(gid, select))
        if self.echoes:
            items += [
                {
                    "@odata.type": "#microsoft.graph.message",
                    "id": i["id"],
                    "isRead": True,
                    "parentFolderId": fid,
                }
                for i in list(items)
                if "@removed" not in i
            ]
        return {"folder": fid, "items": items, "offset": 0, "end": end, "select": select,
                "size": size}  # fmt: skip

    def _shape(self, gid: str, select: list[str]) -> dict[str, Any]:
        message = self.messages[gid]
        keep = set(select) | {"id", "@odata.type", "@odata.etag"} if select else set(message)
        if self.where[gid] == self.names["sentitems"]:
            keep.discard("internetMessageHeaders")  # never returned for Sent Items
        return {k: v for k, v in message.items() if k in keep}


def _page_size(prefer: str) -> int:
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name == "odata.maxpagesize" and value.isdigit():
            return max(1, int(value))
    return 10  # reportedly the default


def _headers(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(h["name"], h["value"]) for h in message.get("internetMessageHeaders", [])]
