"""A fake Zammad REST API v1, serving what HELPDESK-APIS.md ("B. Zammad (REST API v1)")
describes, to the field name.

Served: the auth check (``Authorization: Token token=...``; anything else 401 with
``X-Failure`` and ``{"error", "error_human"}``), ``GET|POST /api/v1/tickets/search`` with
``condition`` (``after (absolute)`` inclusive as on the SQL path, ``before (absolute)``,
``is``), ``query`` as a plain substring (no Elasticsearch: field syntax finds nothing),
``sort_by``/``order_by`` (default ``updated_at`` desc), ``page`` from 1 and ``per_page``
(default 50, silently clamped to 200), in either response shape: ``version=5`` answers
``{"tickets": [ids], "tickets_count", "assets"}`` (an array with ``expand=true``), ``version=6``
an array (``with_total_count`` → ``{records, total_count}``, ``full`` → ``{record_ids,
assets, total_count}``). Also ``/ticket_articles/by_ticket/{id}`` (all articles, with their
association names), ``/ticket_history/{id}`` (``{"history", "assets"}``, ordered
``created_at, id``, names in ``value_*``, ids in ``id_*``, article creations included),
the paginated indexes ``/ticket_states`` (state_type_id only), ``/ticket_priorities``,
``/groups``, ``GET /tickets/{id}``, and ``GET /tags?object=Ticket&o_id=N`` → ``{"tags":
[names]}`` (zammad/zammad ``tags_controller.rb``: ``Tag.tag_list``, which looks up no
ticket, so an unknown or destroyed one has none). A gone ticket's articles, history and
``/tickets/{id}`` 404 (``Couldn't find Ticket with 'id'=N``).

Tickets change through methods that write articles and history as Zammad does: the
creation logs the ticket and its first article; a change logs ``updated`` entries with
the names; a tag added or removed (:meth:`tag`, :meth:`untag`) logs ``added``/``removed``
with ``attribute`` ``tag`` and the name in ``value_to`` (``tag/writes_to_ticket_history.rb``)
and touches the ticket (``touch_reference_by_params``); every change bumps ``updated_at``.
Zammad has no satisfaction ratings: the scenario's ratings are not told (:meth:`load`).

Zammad (5.2) has no general REST rate limit and no rate headers (B8): :meth:`limit` serves
what a throttle in front of it (Rack::Attack's style) answers: 429, ``Retry-After``, a plain
``Retry later`` body, counting requests that came before Retry-After elapsed in ``early``.
Faults on demand: :meth:`fail` (5xx answers, a 404, "truncate", or "pass" to let one by;
with ``proxy_404`` a planned 404 is a reverse proxy's HTML page, not Zammad's JSON),
:meth:`revoke`, ``repeat`` (the search ignores ``page``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import threading
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.fakes.faults import Faults
from tests.fakes.scenario import Story

UTC = dt.UTC
# Normalized scenario values as this site stores them (urgent is a priority an admin added).
STATES = {"new": "new", "open": "open", "pending": "pending reminder", "solved": "closed",
          "closed": "closed", "on_hold": "pending action"}  # fmt: skip
PRIORITIES = {"low": "1 low", "normal": "2 normal", "high": "3 high", "urgent": "4 urgent"}
ARTICLE_TYPES = {"email": 1, "sms": 2, "chat": 3, "fax": 4, "phone": 5, "twitter status": 6,
                 "twitter direct-message": 7, "facebook feed post": 8,
                 "facebook feed comment": 9, "note": 10, "web": 11,
                 "telegram personal-message": 12, "facebook direct-message": 13}  # fmt: skip
SENDERS = {"Agent": 1, "Customer": 2, "System": 3}
ROLES = {"Admin": 1, "Agent": 2, "Customer": 3}
SCENARIO_SENDERS = {"customer": "Customer", "agent": "Agent", "system": "System"}
SYSTEM_USER = 1  # Zammad's "-" user: automations and the system act as it
ERRORS = {
    404: "Not Found",
    500: "Error ID 7f3c2a1b: Please contact your administrator.",
    502: None,  # a proxy's HTML page
    503: None,
}


def iso(when: dt.datetime) -> str:
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Any:
    return jsonify(error=message, error_human=message), status, headers or {}


class FakeZammad(Faults):
    def __init__(self, token: str = "zm-token", version: int = 6) -> None:
        super().__init__()
        self.token = token
        self.credentials = {f"Token token={token}"}
        self.version = version
        self.users: dict[int, dict[str, Any]] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.states: dict[int, dict[str, Any]] = {}
        self.priorities: dict[int, dict[str, Any]] = {}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, list[dict[str, Any]]] = {}
        self.history: dict[int, list[dict[str, Any]]] = {}
        self.tags: dict[int, list[str]] = {}
        self.gone: set[int] = set()
        self._ticket_ids = itertools.count(1)
        self._article_ids = itertools.count(1)
        self._history_ids = itertools.count(1)
        self._user_ids = itertools.count(2)
        self._group_ids = itertools.count(1)
        self.repeat = False  # the search answers page 1 whatever page is asked
        self.proxy_404 = False  # planned 404s come from a proxy in front (an HTML page)
        self.log: list[tuple[str, str, Any]] = []  # (method, full path, JSON body)
        self.lock = threading.Lock()
        self.users[SYSTEM_USER] = {"id": SYSTEM_USER, "login": "-", "firstname": "-",
                                   "lastname": "", "email": "", "role_ids": [],
                                   "active": False}  # fmt: skip
        seeds = [("new", 1, {"default_create": True}), ("open", 2, {"default_follow_up": True}),
                 ("pending reminder", 3, {"ignore_escalation": True}),
                 ("closed", 5, {"ignore_escalation": True}),
                 ("merged", 6, {"ignore_escalation": True}),
                 ("removed", 7, {"ignore_escalation": True, "active": False}),
                 ("pending close", 4, {"ignore_escalation": True})]  # fmt: skip
        for name, kind, extra in seeds:
            self.state(name, kind, **extra)
        self.states[7]["next_state_id"] = 4  # pending close -> closed
        for name in ("1 low", "2 normal", "3 high"):
            self.priority(name)
        self.priorities[2]["default_create"] = True
        self.app = self._build()

    # -- the data ------------------------------------------------------------------------

    def state(self, name: str, state_type_id: int, **extra: Any) -> int:
        sid = len(self.states) + 1
        self.states[sid] = {"id": sid, "state_type_id": state_type_id, "name": name,
                            "next_state_id": None, "ignore_escalation": False,
                            "default_create": False, "default_follow_up": False,
                            "active": True, "note": None, "created_at": "2024-01-01T00:00:00.000Z",
                            **extra}  # fmt: skip
        return sid

    def priority(self, name: str) -> int:
        pid = len(self.priorities) + 1
        self.priorities[pid] = {"id": pid, "name": name, "default_create": False,
                                "ui_icon": None, "ui_color": None, "note": None,
                                "active": True}  # fmt: skip
        return pid

    def user(self, name: str, role: str = "Customer") -> int:
        uid = next(self._user_ids)
        first, _, last = name.partition(" ")
        self.users[uid] = {"id": uid, "login": f"{first.lower()}@x.test", "firstname": first,
                           "lastname": last, "email": f"{first.lower()}@x.test",
                           "role_ids": [ROLES[role]], "organization_id": None, "active": True,
                           "created_at": "2024-01-01T00:00:00.000Z"}  # fmt: skip
        return uid

    def group(self, name: str) -> int:
        gid = next(self._group_ids)
        self.groups[gid] = {"id": gid, "name": name, "name_last": name.split("::")[-1],
                            "parent_id": None, "active": True, "follow_up_possible": "yes",
                            "created_at": "2024-01-01T00:00:00.000Z"}  # fmt: skip
        return gid

    def _id_of(self, table: dict[int, dict[str, Any]], name: str) -> int:
        return next(i for i, row in table.items() if row["name"] == name)

    def create(
        self,
        when: dt.datetime,
        customer: int,
        *,
        author: int | None = None,
        sender: str = "Customer",
        title: str = "Help",
        priority: str = "2 normal",
        state: str = "new",
        group: int | None = None,
        article_type: str = "email",
        article: bool = True,
        internal: bool = False,
    ) -> int:
        """A new ticket; its history logs it, then its first article (by ``author``,
        default the customer, sent as ``sender``)."""
        tid = next(self._ticket_ids)
        by = author or customer
        self.tickets[tid] = {
            "id": tid, "group_id": group, "priority_id": self._id_of(self.priorities, priority),
            "state_id": self._id_of(self.states, state), "organization_id": None,
            "number": str(77000 + tid), "title": title, "owner_id": 1, "customer_id": customer,
            "note": None, "first_response_at": None, "first_response_escalation_at": None,
            "first_response_in_min": None, "first_response_diff_in_min": None,
            "close_at": None, "close_escalation_at": None, "close_in_min": None,
            "close_diff_in_min": None, "update_escalation_at": None, "update_in_min": None,
            "update_diff_in_min": None, "last_contact_at": None,
            "last_contact_agent_at": None, "last_contact_customer_at": None,
            "last_owner_update_at": None,
            "create_article_type_id": ARTICLE_TYPES[article_type] if article else None,
            "create_article_sender_id": SENDERS[sender] if article else None,
            "article_count": 0, "escalation_at": None, "pending_time": None, "type": None,
            "time_unit": None, "preferences": {}, "updated_by_id": by, "created_by_id": by,
            "created_at": iso(when), "updated_at": iso(when),
        }  # fmt: skip
        self.articles[tid], self.history[tid] = [], []
        self._log(tid, when, by, "created", "Ticket", tid)
        if article:
            self.article(tid, when, by, sender, internal=internal, kind=article_type)
        # A trigger's notification to the customer, logged on the ticket.
        self._log(tid, when, SYSTEM_USER, "notification", "Ticket", tid,
                  value_to=f"{self.users[customer]['email']}(create:email)")  # fmt: skip
        return tid

    def article(
        self,
        tid: int,
        when: dt.datetime,
        author: int,
        sender: str,
        internal: bool = False,
        kind: str | None = None,
    ) -> int:
        ticket = self.tickets[tid]
        kind = kind or ("note" if internal else "email")
        aid = next(self._article_ids)
        user = self.users[author]
        article = {
            "id": aid, "ticket_id": tid, "type_id": ARTICLE_TYPES[kind],
            "sender_id": SENDERS[sender], "from": f"{user['firstname']} <{user['email']}>",
            "to": "support@acme.test", "cc": None, "subject": ticket["title"],
            "reply_to": None, "message_id": f"<{aid}@x.test>", "message_id_md5": None,
            "in_reply_to": None, "content_type": "text/html", "references": None,
            "body": "<p>…</p>", "internal": internal, "preferences": {},
            "updated_by_id": author, "created_by_id": author, "origin_by_id": None,
            "created_at": iso(when), "updated_at": iso(when), "attachments": [],
            "type": kind, "sender": sender, "created_by": user["login"],
            "updated_by": user["login"], "time_unit": None,
        }  # fmt: skip
        self.articles[tid].append(article)
        self._log(tid, when, author, "created", "Ticket::Article", aid, related=tid)
        if sender != "System":
            ticket["article_count"] += 1
        communication = kind != "note" and not internal
        if communication and sender == "Agent":  # B3
            ticket["first_response_at"] = ticket["first_response_at"] or iso(when)
            ticket["last_contact_agent_at"] = ticket["last_contact_at"] = iso(when)
        elif communication and sender == "Customer":
            ticket["last_contact_customer_at"] = ticket["last_contact_at"] = iso(when)
        self._touch(tid, when, author)
        return aid

    def change(self, tid: int, when: dt.datetime, author: int, **values: str | int) -> None:
        """``state``/``priority`` by name, ``group`` by id: one ``updated`` entry each."""
        ticket = self.tickets[tid]
        for attribute, value in values.items():
            table = {"state": self.states, "priority": self.priorities, "group": self.groups}[
                attribute
            ]
            new = value if isinstance(value, int) else self._id_of(table, value)
            old = ticket[f"{attribute}_id"]
            ticket[f"{attribute}_id"] = new
            self._log(tid, when, author, "updated", "Ticket", tid, attribute=attribute,
                      id_from=old, id_to=new,
                      value_from=None if old is None else table[old]["name"],
                      value_to=table[new]["name"])  # fmt: skip
            if attribute == "state" and table[new]["state_type_id"] == 3:
                ticket["pending_time"] = iso(when + dt.timedelta(days=1))
                reminder = f"{when + dt.timedelta(days=1):%Y-%m-%d %H:%M:%S} UTC"  # Ruby to_s
                self._log(tid, when, author, "updated", "Ticket", tid,
                          attribute="pending_time", value_from="", value_to=reminder)  # fmt: skip
        self._touch(tid, when, author)

    def tag(self, tid: int, when: dt.datetime, author: int, name: str) -> None:
        """A tag added (``Tag.tag_add``: nothing happens when the ticket has it already)."""
        have = self.tags.setdefault(tid, [])
        if name in have:
            return
        have.append(name)
        self._log(tid, when, author, "added", "Ticket", tid, attribute="tag", value_to=name)
        self._touch(tid, when, author)

    def untag(self, tid: int, when: dt.datetime, author: int, name: str) -> None:
        """A tag removed (``Tag.tag_remove``: logged for each tag row destroyed)."""
        have = self.tags.setdefault(tid, [])
        if name in have:
            have.remove(name)
            self._log(tid, when, author, "removed", "Ticket", tid, attribute="tag",
                      value_to=name)  # fmt: skip
        self._touch(tid, when, author)

    def merge(self, tid: int, into: int, when: dt.datetime, author: int) -> None:
        self.change(tid, when, author, state="merged")

    def remove(self, tid: int, when: dt.datetime, author: int) -> None:
        self.change(tid, when, author, state="removed")

    def destroy(self, tid: int) -> None:
        """Deleted for good: the search no longer finds it, its articles, history and
        ``/tickets/{id}`` 404, its tags are gone (``tag_destroy``)."""
        self.gone.add(tid)
        self.tags.pop(tid, None)

    def load(self, stories: Iterable[Story]) -> dict[str, int]:
        """The scenario's stories as tickets: an agent, an admin, one customer per story, a
        group per queue, the ``4 urgent`` priority. Ratings are not told (Zammad has none);
        ``solved`` is the ``closed`` state (a site maps it with ``statuses``)."""
        agent = self.user("Ann Agent", "Agent")
        self.user("Ada Admin", "Admin")
        if "4 urgent" not in [p["name"] for p in self.priorities.values()]:
            self.priority("4 urgent")
        queues: dict[str, int] = {}
        ids = {}
        for story in stories:
            customer = self.user(f"{story.key.title()} Customer")
            who = {"customer": customer, "agent": agent, "system": SYSTEM_USER}
            steps = list(story.steps)
            first = steps[0] if steps and steps[0].kind == "message" else None
            first = first if first and first.when == story.created else None
            group = queues.setdefault(story.queue, self.group(story.queue))
            tid = ids[story.key] = self.create(
                story.created, customer, author=who[story.by],
                sender=SCENARIO_SENDERS[story.by], title=story.subject,
                priority=PRIORITIES[story.priority], group=group, article_type=story.channel,
                article=first is not None, internal=not first.public if first else False,
            )  # fmt: skip
            for step in steps[1:] if first else steps:
                if step.kind == "message":
                    self.article(tid, step.when, who[step.who], SCENARIO_SENDERS[step.who],
                                 internal=not step.public)  # fmt: skip
                elif step.kind == "status":
                    self.change(tid, step.when, agent, state=STATES[step.value])
                elif step.kind == "priority":
                    self.change(tid, step.when, agent, priority=PRIORITIES[step.value])
        return ids

    def _log(
        self,
        tid: int,
        when: dt.datetime,
        author: int,
        kind: str,
        obj: str,
        o_id: int,
        related: int | None = None,
        **values: Any,
    ) -> None:
        entry: dict[str, Any] = {"id": next(self._history_ids), "o_id": o_id, "type": kind,
                                 "object": obj}  # fmt: skip
        if related is not None:
            entry.update(related_o_id=related, related_object="Ticket")
        entry.update(values)
        entry.update(created_by_id=author, created_at=iso(when))
        self.history[tid].append(entry)

    def _touch(self, tid: int, when: dt.datetime, author: int) -> None:
        ticket = self.tickets[tid]
        ticket["updated_at"] = max(ticket["updated_at"], iso(when))
        ticket["updated_by_id"] = author

    # -- faults --------------------------------------------------------------------------

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = self._flask("fake-zammad")
        app.add_url_rule("/api/v1/tickets/search", view_func=self._search,
                         methods=["GET", "POST"])  # fmt: skip
        app.add_url_rule("/api/v1/tickets/<int:tid>", view_func=self._ticket)
        app.add_url_rule("/api/v1/ticket_articles/by_ticket/<int:tid>", view_func=self._articles)
        app.add_url_rule("/api/v1/ticket_history/<int:tid>", view_func=self._history)
        app.add_url_rule("/api/v1/tags", view_func=self._tags)
        for name in ("ticket_states", "ticket_priorities", "groups"):
            app.add_url_rule(f"/api/v1/{name}", endpoint=name,
                             view_func=lambda name=name: self._index(name))  # fmt: skip
        app.register_error_handler(
            404, lambda _: _error(f"No route matches [{request.method}] {request.path}", 404)
        )
        return app

    def _logged(self) -> Any:
        return request.method, request.full_path, request.get_json(silent=True)

    def _too_many(self, wait: float) -> Any:
        headers = {"Retry-After": str(math.ceil(wait)), "Content-Type": "text/plain"}
        return Response("Retry later\n", 429, headers)

    def _failed(self, status: int) -> Any:
        if status == 404 and self.proxy_404:
            return "<html><body><h1>404 Not Found</h1>nginx</body></html>", 404
        message = ERRORS.get(status)
        if message is None:
            return f"<html><body>{status}</body></html>", status
        return _error(message, status)

    def _check(self) -> Any:
        if request.headers.get("Authorization") not in self.credentials:
            return _error("Invalid token!", 401, {"X-Failure": "Invalid token!"})
        return None

    def _headers(self, response: Response) -> None:
        response.headers["X-Request-Id"] = "0c1f4a9e-5b2d-4c3e-9f10-2a7d8e6b4c11"
        response.headers["X-Runtime"] = "0.031"

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.args)
        if request.method == "POST":
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                params.update(body)
        return params

    def _search(self) -> Any:
        params = self._params()
        truthy = {k: str(params.get(k, "")).lower() == "true"
                  for k in ("expand", "with_total_count", "full", "only_total_count")}  # fmt: skip
        try:
            page = max(1, int(params.get("page") or 1))
            per_page = min(200, max(1, int(params.get("per_page") or params.get("limit") or 50)))
        except ValueError:
            return _error("Invalid value for page or per_page", 422)
        if self.repeat:
            page = 1
        with self.lock:
            found = [t for tid, t in self.tickets.items() if tid not in self.gone]
            query = str(params.get("query") or "").replace("*", "").strip().lower()
            if query:  # SQL: a substring of title or number (no Elasticsearch here)
                found = [t for t in found if query in t["title"].lower() or query in t["number"]]
            try:
                found = [t for t in found if _matches(t, params.get("condition") or {})]
            except (KeyError, ValueError, TypeError):
                return _error("Invalid condition", 422)
            sort_by = str(params.get("sort_by") or "updated_at")
            descending = str(params.get("order_by") or "desc") == "desc"
            found.sort(key=lambda t: (t.get(sort_by) or "", t["id"]), reverse=descending)
            chunk = found[(page - 1) * per_page : page * per_page]
            if self.version >= 6 and truthy["only_total_count"]:
                return jsonify(total_count=len(found))
            if self.version < 6 and not truthy["expand"]:
                return jsonify(tickets=[t["id"] for t in chunk], tickets_count=len(chunk),
                               assets=self._assets(chunk))  # fmt: skip
            records = [self._expanded(t) if truthy["expand"] else dict(t) for t in chunk]
            if self.version >= 6 and truthy["full"]:
                return jsonify(record_ids=[t["id"] for t in chunk], assets=self._assets(chunk),
                               total_count=len(found))  # fmt: skip
            if self.version >= 6 and truthy["with_total_count"]:
                return jsonify(records=records, total_count=len(found))
            return jsonify(records)

    def _assets(self, tickets: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("customer_id", "owner_id", "created_by_id")
        users = {str(t[k]): self.users[t[k]] for t in tickets for k in keys
                 if t.get(k) in self.users}  # fmt: skip
        groups = {str(t["group_id"]): self.groups[t["group_id"]] for t in tickets
                  if t.get("group_id") in self.groups}  # fmt: skip
        return {"Ticket": {str(t["id"]): dict(t) for t in tickets}, "User": users,
                "Group": groups}  # fmt: skip

    def _expanded(self, ticket: dict[str, Any]) -> dict[str, Any]:
        def login(uid: Any) -> str:
            return str(self.users.get(uid, {}).get("login") or "-")

        names = {v: k for k, v in ARTICLE_TYPES.items()}
        return {**ticket, "article_ids": [a["id"] for a in self.articles[ticket["id"]]],
                "group": self.groups.get(ticket["group_id"], {}).get("name"),
                "state": self.states[ticket["state_id"]]["name"],
                "priority": self.priorities[ticket["priority_id"]]["name"],
                "owner": login(ticket["owner_id"]), "customer": login(ticket["customer_id"]),
                "created_by": login(ticket["created_by_id"]),
                "updated_by": login(ticket["updated_by_id"]),
                "create_article_type": names.get(ticket["create_article_type_id"]),
                "create_article_sender": {v: k for k, v in SENDERS.items()}.get(
                    ticket["create_article_sender_id"])}  # fmt: skip

    def _missing(self, tid: int) -> Any:
        message = f"Couldn't find Ticket with 'id'={tid}"
        return _error(message, 404)

    def _ticket(self, tid: int) -> Any:
        with self.lock:
            if tid not in self.tickets or tid in self.gone:
                return self._missing(tid)
            return jsonify(dict(self.tickets[tid]))

    def _articles(self, tid: int) -> Any:
        if tid not in self.tickets or tid in self.gone:
            return self._missing(tid)
        return jsonify(self.articles[tid])

    def _history(self, tid: int) -> Any:
        if tid not in self.tickets or tid in self.gone:
            return self._missing(tid)
        entries = sorted(self.history[tid], key=lambda e: (e["created_at"], e["id"]))
        ticket = self.tickets[tid]
        users = {str(e["created_by_id"]): self.users[e["created_by_id"]] for e in entries}
        users[str(ticket["customer_id"])] = self.users[ticket["customer_id"]]
        return jsonify(history=entries, assets={"User": users, "Ticket": {str(tid): ticket}})

    def _tags(self) -> Any:
        with self.lock:
            try:
                tid = int(request.args.get("o_id") or 0)
            except ValueError:
                tid = 0
            if request.args.get("object") != "Ticket":
                return jsonify(tags=[])
            return jsonify(tags=list(self.tags.get(tid, [])))

    def _index(self, name: str) -> Any:
        table = {"ticket_states": self.states, "ticket_priorities": self.priorities,
                 "groups": self.groups}[name]  # fmt: skip
        try:
            page = max(1, int(request.args.get("page") or 1))
            limit = request.args.get("per_page") or request.args.get("limit") or 100
            per_page = min(1000, max(1, int(limit)))
        except ValueError:
            return _error("Invalid value for page or per_page", 422)
        rows = list(table.values())
        return jsonify(rows[(page - 1) * per_page : page * per_page])


def _matches(ticket: dict[str, Any], condition: dict[str, Any]) -> bool:
    for key, rule in condition.items():
        attribute = key.removeprefix("ticket.")
        operator, value = rule["operator"], rule["value"]
        have = ticket[attribute]
        if operator == "after (absolute)":  # the SQL path: attr >= value (inclusive)
            if have is None or _instant(have) < _instant(value):
                return False
        elif operator == "before (absolute)":
            if have is None or _instant(have) > _instant(value):
                return False
        elif operator == "is":
            wanted = value if isinstance(value, list) else [value]
            if str(have) not in [str(v) for v in wanted]:
                return False
        else:
            raise ValueError(operator)
    return True


def _instant(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
