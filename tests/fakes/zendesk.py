"""A fake Zendesk Support API, serving what HELPDESK-APIS.md ("Zendesk Support REST API")
describes, to the field name.

Served: the auth check (API token as Basic ``{email}/token:{token}``, or an OAuth Bearer
token; anything else 401 ``{"error":"Couldn't authenticate you"}``), the cursor-based
incremental ticket export (``start_time`` or ``cursor``, ``per_page``, ``after_cursor``,
``end_of_stream``; tickets in ``generated_timestamp`` order, deleted ones with status
``deleted``), each ticket's audits with cursor pagination (``page[size]``, ``meta.has_more``,
``links.next``; a full last page says has_more, as zenpy saw), ``users/show_many`` and
``groups``. Satisfaction ratings sit inline on the tickets; a deleted ticket's audits 404.

Tickets change through methods that write audits the way Zendesk does: the creation audit
holds the first Comment and the Create events, a reply a Comment and the Change events of
the same update, a trigger's comment comes ``via`` rule/trigger, a merge ``via`` merge.
Every change bumps the ticket's ``generated_timestamp`` and moves it to the end of the export.

Faults on demand: :meth:`fail` (5xx answers, a 404, or a truncated body on requests whose
path contains a text), :meth:`limit` (429 + Retry-After once a budget is spent, counting the
requests that came before Retry-After elapsed in ``early``), :meth:`revoke`, ``stuck``.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, g, jsonify, request

from tests.fakes.faults import Faults
from tests.fakes.scenario import Step, Story

UTC = dt.UTC
PRIORITIES = {"normal": None}  # tickets nobody prioritised carry null (else the same name)
STATUSES = {"on_hold": "hold"}  # (else the same name)
SCORES = {5: "good", 1: "bad"}
ERRORS = {
    400: "Bad Request",
    404: {"error": "RecordNotFound", "description": "Not found"},
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
LIMITED = {
    "error": "APIRateLimitExceeded",
    "description": "Number of allowed incremental export API requests per minute exceeded",
}


def iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor.encode()).decode()


class FakeZendesk(Faults):
    def __init__(
        self,
        email: str = "bot@acme.test",
        token: str = "zd-api-token",
        oauth_token: str = "zd-oauth-token",
        clock: Callable[[], float] = time.time,  # for start_time's "one minute in the past"
    ) -> None:
        super().__init__()
        basic = base64.b64encode(f"{email}/token:{token}".encode()).decode()
        self.credentials = {f"Basic {basic}", f"Bearer {oauth_token}"}
        self.clock = clock
        self.users: dict[int, dict[str, Any]] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.audits: dict[int, list[dict[str, Any]]] = {}
        self.order: dict[int, tuple[int, int]] = {}  # (generated_timestamp, update number)
        self._ticket_ids = itertools.count(1)
        self._ids = itertools.count(360_000_001)  # users, groups, triggers
        self._event_ids = itertools.count(28_835_719_459_732)  # audits and their events
        self._updates = itertools.count(1)
        self.stuck = False  # an empty export page repeats its cursor, end_of_stream false
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.app = self._build()
        self.trigger = {"id": next(self._ids), "title": "Notify requester of received request"}

    # -- the data ------------------------------------------------------------------------

    def user(self, name: str, role: str = "end-user") -> int:
        uid = next(self._ids)
        self.users[uid] = {"id": uid, "name": name, "email": f"{name.split()[0].lower()}@x.test",
                           "role": role, "role_type": {"admin": 4, "agent": 0}.get(role),
                           "active": True, "created_at": "2024-01-01T00:00:00Z"}  # fmt: skip
        return uid

    def group(self, name: str) -> int:
        gid = next(self._ids)
        self.groups[gid] = {"id": gid, "name": name, "description": "", "default": False,
                            "deleted": False, "created_at": "2024-01-01T00:00:00Z"}  # fmt: skip
        return gid

    def create(
        self,
        when: dt.datetime,
        requester: int,
        *,
        author: int | None = None,
        subject: str = "Help",
        priority: str | None = None,
        status: str = "new",
        channel: str = "email",
        group: int | None = None,
        kind: str | None = None,
        tags: Iterable[str] = (),
        comment: bool = True,
        public: bool = True,
    ) -> int:
        """A new ticket; its creation audit (by ``author``, default the requester) holds
        the first comment, the Create events and the trigger's notification."""
        tid = next(self._ticket_ids)
        via = {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}
        self.tickets[tid] = {
            "id": tid, "external_id": None, "via": via, "created_at": iso(when),
            "updated_at": iso(when), "generated_timestamp": 0, "type": kind,
            "subject": subject, "raw_subject": subject, "description": subject,
            "priority": priority, "status": status, "requester_id": requester,
            "submitter_id": author or requester, "assignee_id": None, "organization_id": None,
            "group_id": group, "tags": list(tags), "custom_fields": [], "is_public": public,
            "satisfaction_rating": None, "brand_id": 1, "support_type": "agent",
            "from_messaging_channel": False,
        }  # fmt: skip
        created = {"status": status, "priority": priority, "type": kind, "subject": subject,
                   "group_id": None if group is None else str(group), "tags": list(tags),
                   "requester_id": str(requester)}  # fmt: skip
        events: list[dict[str, Any]] = (
            [self._comment(author or requester, public)] if comment else []
        )
        events += [{"type": "Create", "field_name": k, "value": v} for k, v in created.items()]
        events.append({"type": "Notification", "subject": "[Request received]", "body": "…",
                       "recipients": [requester], "via": self._rule_via()})  # fmt: skip
        self._audit(tid, when, author or requester, via, events)
        return tid

    def update(
        self,
        tid: int,
        when: dt.datetime,
        author: int,
        items: Iterable[tuple[str, Any]],
        via: dict[str, Any] | None = None,
    ) -> None:
        """One audit: ``("comment", public)`` items and ``(field, value)`` changes, in order."""
        ticket, events = self.tickets[tid], []
        for name, value in items:
            if name == "comment":
                events.append(self._comment(author, bool(value)))
                continue
            value = STATUSES.get(value, value) if name == "status" else value
            previous = ticket[name]
            if name.endswith("_id"):  # ids in audits are strings, on tickets numbers
                value, previous = str(value), None if previous is None else str(previous)
            events.append({"type": "Change", "field_name": name, "value": value,
                           "previous_value": previous})  # fmt: skip
            ticket[name] = int(value) if name.endswith("_id") else value
        web = {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}}
        self._audit(tid, when, author, via or web, events)

    def reply(
        self, tid: int, when: dt.datetime, author: int, public: bool = True, **changes: Any
    ) -> None:
        self.update(tid, when, author, [("comment", public), *changes.items()])

    def by_trigger(self, tid: int, when: dt.datetime, author: int) -> None:
        """A public comment a trigger adds (it acts as an agent; its via says rule)."""
        self.update(tid, when, author, [("comment", True)], via=self._rule_via())

    def rate(self, tid: int, when: dt.datetime, score: str) -> None:
        ticket = self.tickets[tid]
        old = ticket["satisfaction_rating"] or {"id": next(self._ids), "created_at": iso(when)}
        ticket["satisfaction_rating"] = {**old, "score": score, "comment": None,
                                         "updated_at": iso(when)}  # fmt: skip
        self._touch(tid, when)

    def delete(self, tid: int, when: dt.datetime) -> None:
        self.tickets[tid]["status"] = "deleted"
        self._touch(tid, when)

    def merge(self, tid: int, into: int, when: dt.datetime, author: int) -> None:
        via = {"channel": "merge", "source": {"from": {"ticket_id": into}, "to": {}, "rel": None}}
        self.update(tid, when, author, [("comment", True), ("status", "closed")], via=via)

    def load(self, stories: Iterable[Story]) -> dict[str, int]:
        """The scenario's stories as tickets: an agent, an admin, one customer per story,
        a group per queue, the trigger for ``system`` messages. Steps at one instant share
        an audit when they follow a message (a reply that also sets the status)."""
        agent = self.user("Ann Agent", "agent")
        self.user("Ada Admin", "admin")
        queues: dict[str, int] = {}
        ids = {}
        for story in stories:
            customer = self.user(f"{story.key.title()} Customer")
            who = {"customer": customer, "agent": agent, "system": agent}
            steps = list(story.steps)
            first = steps[0] if steps and steps[0].kind == "message" else None
            first = first if first and first.when == story.created else None
            group = queues.setdefault(story.queue, self.group(story.queue))
            tid = ids[story.key] = self.create(
                story.created, customer, author=who[story.by], subject=story.subject,
                priority=PRIORITIES.get(story.priority, story.priority), channel=story.channel,
                group=group, comment=first is not None, public=first.public if first else True,
            )  # fmt: skip
            for group in _audits_of(steps[1:] if first else steps):
                head = group[0]
                if head.kind == "rating":
                    self.rate(tid, head.when, SCORES[head.score])
                    continue
                author = head.who if head.kind == "message" else "agent"
                items = [("comment", s.public) if s.kind == "message" else (s.kind, s.value)
                         for s in group]  # fmt: skip
                via = self._rule_via() if author == "system" else None
                self.update(tid, head.when, who[author], items, via=via)
        return ids

    def populate(
        self,
        n: int,
        seed: int = 1,
        start: dt.datetime = dt.datetime(2025, 3, 3, 8, 0, tzinfo=UTC),
    ) -> list[int]:
        """``n`` generated tickets for large syncs (about 5.4 normalized events each), the
        same for the same seed: each created by a customer over ten days from ``start``,
        then 0-4 more audits in this order: an agent's reply setting pending, the
        customer's reply setting open, solved, a satisfaction rating. Returns their ids."""
        rng = random.Random(seed)
        agents = [self.user(f"Agent{i} Bulk", "agent") for i in range(5)]
        customers = [self.user(f"Customer{i} Bulk") for i in range(max(1, n // 5))]
        groups = [self.group(name) for name in ("Support", "Billing", "Sales")]
        spread = 10 * 86400 / max(1, n)
        ids = []
        for i in range(n):
            when = start + dt.timedelta(seconds=int(i * spread))
            customer = rng.choice(customers)
            tid = self.create(
                when, customer, subject=f"Generated ticket {i}", group=rng.choice(groups),
                priority=rng.choice(["low", None, None, "high", "urgent"]),
                channel=rng.choice(["email", "web", "chat"]),
            )  # fmt: skip
            steps = rng.randint(0, 4)
            for step in range(steps):
                when += dt.timedelta(seconds=rng.randint(300, 8 * 3600))
                if step == 0:
                    self.reply(tid, when, rng.choice(agents), status="pending")
                elif step == 1:
                    self.reply(tid, when, customer, status="open")
                elif step == 2:
                    self.update(tid, when, rng.choice(agents), [("status", "solved")])
                else:
                    self.rate(tid, when, rng.choice(["good", "good", "bad"]))
            ids.append(tid)
        return ids

    def _rule_via(self) -> dict[str, Any]:
        return {
            "channel": "rule",
            "source": {"to": {}, "from": dict(self.trigger), "rel": "trigger"},
        }

    def _comment(self, author: int, public: bool) -> dict[str, Any]:
        return {"type": "Comment", "author_id": author, "body": "…", "html_body": "<p>…</p>",
                "plain_body": "…", "public": public, "attachments": []}  # fmt: skip

    def _audit(
        self, tid: int, when: dt.datetime, author: int, via: dict[str, Any], events: list[Any]
    ) -> None:
        aid = next(self._event_ids)
        for event in events:
            event["id"] = next(self._event_ids)
            if event["type"] == "Comment":
                event["audit_id"] = aid
        self.audits.setdefault(tid, []).append({
            "id": aid, "ticket_id": tid, "created_at": iso(when), "author_id": author, "via": via,
            "metadata": {"system": {"client": "fake", "ip_address": "127.0.0.1"}, "custom": {}},
            "events": events,
        })  # fmt: skip
        self._touch(tid, when)

    def _touch(self, tid: int, when: dt.datetime) -> None:
        ticket = self.tickets[tid]
        generated = max(int(when.timestamp()), ticket["generated_timestamp"])
        ticket["updated_at"], ticket["generated_timestamp"] = iso(when), generated
        self.order[tid] = (generated, next(self._updates))

    # -- faults --------------------------------------------------------------------------

    def limit(self, every: int, retry_after: int = 1, budget_headers: bool = False) -> None:
        """Allow ``every`` requests per window; then 429 with Retry-After until the window
        has passed. ``budget_headers``: the answer that spends the budget says so
        (``ratelimit-remaining: 0``, ``ratelimit-reset``), so a client can wait at once."""
        super().limit(every, retry_after)
        self.budget_headers = budget_headers

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = self._flask("fake-zendesk")
        for rule, view in (
            ("/api/v2/incremental/tickets/cursor", self._export),
            ("/api/v2/tickets/<int:tid>/audits", self._ticket_audits),
            ("/api/v2/users/show_many", self._show_many),
            ("/api/v2/tickets/show_many", self._show_tickets),
            ("/api/v2/groups", self._groups),
        ):
            app.add_url_rule(rule, view_func=view)
            app.add_url_rule(f"{rule}.json", view_func=view, endpoint=f"{view.__name__}_json")
        app.register_error_handler(404, lambda _: (jsonify(
            error="InvalidEndpoint", description="Not found"), 404))  # fmt: skip
        return app

    def _too_many(self, wait: float) -> Any:
        return jsonify(LIMITED), 429, {"Retry-After": str(math.ceil(wait))}

    def _failed(self, status: int) -> Any:
        body = ERRORS.get(status, "error")
        return (jsonify(body), status) if isinstance(body, dict) else (body, status)

    def _check(self) -> Any:
        if request.headers.get("Authorization") not in self.credentials:
            headers = {"WWW-Authenticate": 'Basic realm="Web Password"'}
            return jsonify(error="Couldn't authenticate you"), 401, headers
        return None

    def _headers(self, response: Response) -> None:
        response.headers["X-Rate-Limit"] = "700"
        response.headers["X-Rate-Limit-Remaining"] = "699"
        if g.get("budget_spent"):
            response.headers["ratelimit-limit"] = str(self.every)
            response.headers["ratelimit-remaining"] = "0"
            response.headers["ratelimit-reset"] = str(self.retry_after)

    def _export(self) -> Any:
        per_page = request.args.get("per_page", 1000, type=int)
        cursor, start_time = request.args.get("cursor"), request.args.get("start_time", type=int)
        if cursor:
            try:
                at, _, number = _decode(cursor).removesuffix("|").partition(".0||")
                position = (int(at), int(number))
            except ValueError:
                return _bad("InvalidPaginationParameter", "cursor is not valid")
        elif start_time is None:
            return jsonify(
                error="InvalidValue", description="start_time or cursor is required"
            ), 400
        elif start_time > self.clock() - 60:
            return jsonify(error="StartTimeTooRecent",
                           description="Too recent start_time. Use a start_time at least one "
                                       "minute in the past"), 400  # fmt: skip
        else:
            position = (start_time, 0)
        if not 1 <= per_page <= 1000:
            return _bad("InvalidPaginationParameter", "per_page is not valid")
        with self.lock:
            keys = sorted((key, tid) for tid, key in self.order.items() if key > position)
            if request.args.get("exclude_deleted") == "true":
                keys = [(k, t) for k, t in keys if self.tickets[t]["status"] != "deleted"]
            page = keys[:per_page]
            tickets = [self._public(self.tickets[tid]) for _, tid in page]
        last = page[-1][0] if page else position
        after = _encode(f"{last[0]}.0||{last[1]}|")
        end = len(keys) <= per_page
        if self.stuck:
            end, after = False, after if page else (cursor or after)
        base = request.host_url.rstrip("/")
        return jsonify(tickets=tickets, after_cursor=after, before_cursor=None, before_url=None,
                       after_url=f"{base}/api/v2/incremental/tickets/cursor?cursor={after}",
                       end_of_stream=end)  # fmt: skip

    def _public(self, ticket: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"{request.host_url}api/v2/tickets/{ticket['id']}.json", **ticket}

    def _ticket_audits(self, tid: int) -> Any:
        ticket = self.tickets.get(tid)
        if ticket is None or ticket["status"] == "deleted":
            return jsonify(ERRORS[404]), 404
        return self._cursor_page(self.audits.get(tid, []), "audits")

    def _show_many(self) -> Any:
        ids = [int(i) for i in request.args.get("ids", "").split(",") if i.strip()]
        if len(ids) > 100:
            return jsonify(error="TooManyValues", description="Maximum 100 users per call"), 400
        users = [self.users[i] for i in ids if i in self.users]
        return jsonify(users=users, next_page=None, previous_page=None, count=len(users))

    def _show_tickets(self) -> Any:
        ids = [int(i) for i in request.args.get("ids", "").split(",") if i.strip().isdigit()]
        if len(ids) > 100:
            return jsonify(error="TooManyValues", description="Maximum 100 tickets per call"), 400
        with self.lock:  # show_many leaves out deleted tickets
            tickets = [self._public(self.tickets[i]) for i in ids
                       if i in self.tickets and self.tickets[i]["status"] != "deleted"]  # fmt: skip
        return jsonify(tickets=tickets, next_page=None, previous_page=None, count=len(tickets))

    def _groups(self) -> Any:
        groups = list(self.groups.values())
        if "page[size]" in request.args:
            return self._cursor_page(groups, "groups")
        return jsonify(groups=groups, next_page=None, previous_page=None, count=len(groups))

    def _cursor_page(self, items: list[dict[str, Any]], key: str) -> Any:
        size = request.args.get("page[size]", 100, type=int)
        try:
            start = (
                int(_decode(request.args["page[after]"])) if "page[after]" in request.args else 0
            )
        except ValueError:
            return _bad("InvalidPaginationParameter", "page[after] is not valid")
        if not 1 <= size <= 100:
            return _bad("InvalidPaginationParameter", "page[size] is not valid")
        chunk = items[start : start + size]
        has_more = len(chunk) == size  # a full last page still says so
        after, before = _encode(str(start + len(chunk))), _encode(str(start))
        link = f"{request.base_url}?page[size]={size}&page[after]="
        meta = {"has_more": has_more, "after_cursor": after, "before_cursor": before}
        links = {"next": link + after if has_more else None,
                 "prev": link.replace("after", "before") + before}  # fmt: skip
        return jsonify({key: chunk, "meta": meta, "links": links})


def _audits_of(steps: Iterable[Step]) -> list[list[Step]]:
    """Steps as Zendesk would record them: a message starts an audit, and a change at the
    same instant joins it (a reply that also sets the status); a rating stands alone."""
    audits: list[list[Step]] = []
    for step in steps:
        head = audits[-1][0] if audits else None
        if (
            head is not None
            and head.kind != "rating"
            and head.when == step.when
            and step.kind in ("status", "priority")
        ):
            audits[-1].append(step)
        else:
            audits.append([step])
    return audits


def _bad(code: str, title: str) -> Any:
    return jsonify(errors=[{"code": code, "title": title}]), 400
