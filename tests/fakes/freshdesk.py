"""A fake Freshdesk (API v2) that speaks HTTP the way HELPDESK-APIS.md "PART A" says:
Basic auth with the API key as user (401 ``invalid_credentials`` otherwise), tickets as a
bare JSON array paged by ``page``/``per_page`` (max 100) with a ``Link: <…>; rel="next"``
header, the 300-page cap (page 301 is a 400 with the documented message), only the last
30 days without ``updated_since``, deleted and spam tickets only under their filters,
``include=stats`` costing two more credits, conversations, agents, groups, ticket fields,
satisfaction ratings, ``X-RateLimit-*`` headers and 429 + ``Retry-After``.

Faults on demand: a per-window credit budget (requests that come before the promised
Retry-After are counted in ``early``), bursts of 5xx, a truncated body, a revoked key.

Time is the fake's own (``now``): every change is stamped with it, and the ``Date``
header tells it. ``load`` queues the shared scenario's stories and ``play`` lets their
steps happen up to an instant, so a test can sync between them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import email.utils
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.fakes.scenario import T0, Story

API_KEY = "fd-test-key-0123456789abcdef"
AGENT = {"id": 1, "name": "Rachel", "email": "rachel@acme.example"}
UNAUTHORIZED = {
    "code": "invalid_credentials",
    "message": "You have to be logged in to perform this action.",
}
PAGE_CAP_MESSAGE = (
    "You cannot access tickets beyond the 300th page. Please provide a smaller page number."
)
STATUS_CHOICES = {
    2: ["Open", "Being Processed"],
    3: ["Pending", "Awaiting your Reply"],
    4: ["Resolved", "This ticket has been Resolved"],
    5: ["Closed", "This ticket has been Closed"],
    6: ["Waiting on Customer", "Awaiting your Reply"],
    7: ["Waiting on Third Party", "Being Processed"],
}
INCLUDES = {"stats", "requester", "description", "company"}
STATS_KEYS = (
    "agent_responded_at",
    "requester_responded_at",
    "first_responded_at",
    "status_updated_at",
    "reopened_at",
    "resolved_at",
    "closed_at",
    "pending_since",
)

# The scenario's normalized values in Freshdesk's terms.
STATUS_IDS = {"new": 2, "open": 2, "pending": 3, "on_hold": 7, "solved": 4, "closed": 5}
PRIORITY_IDS = {"low": 1, "normal": 2, "high": 3, "urgent": 4}
SOURCE_IDS = {"email": 1, "web": 2, "phone": 3, "chat": 7, "social": 5}
RATING_VALUES = {5: 103, 4: 101, 3: 100, 2: -101, 1: -103}


def stamp(at: dt.datetime | None) -> str | None:
    return None if at is None else at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def validation_failed(field: str, message: str) -> tuple[Response, int]:
    body = {"description": "Validation failed",
            "errors": [{"field": field, "message": message, "code": "invalid_value"}]}  # fmt: skip
    return jsonify(body), 400


@dataclasses.dataclass
class Skipped:
    """A step of a story Freshdesk cannot tell, and why."""

    story: str
    step: int
    reason: str


class FakeFreshdesk:
    """One Freshdesk account: its tickets, conversations, agents, groups, statuses and
    ratings, the faults to serve, and what it was asked (see the module's docstring)."""

    def __init__(self, api_key: str = API_KEY, now: dt.datetime = T0) -> None:
        self.lock = threading.RLock()
        self.api_key = api_key
        self.now = now
        self.tickets: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, list[dict[str, Any]]] = {}
        self.ratings: list[dict[str, Any]] = []
        self.agents = [AGENT]
        self.groups = {43000001: "Support", 43000002: "Billing"}
        self.statuses = dict(STATUS_CHOICES)
        self.max_pages = 300
        self._ids = {"ticket": 0, "conversation": 1000, "contact": 67000, "rating": 100}
        # Variants of what HELPDESK-APIS.md leaves unconfirmed.
        self.newest_first = False  # conversation order
        self.filters_ignore_since = False  # filter=deleted|spam and updated_since/order
        self.choices_as_objects = False  # ticket_fields status choices
        # Faults, and what the fake saw.
        self.revoked = False
        self.failures: list[tuple[int, str]] = []  # (status, path fragment), in order
        self.truncations: list[tuple[str, int | None]] = []  # (path fragment, page)
        self.budget = (100_000, 60.0)  # credits per window (seconds)
        self.window: tuple[float, int] = (time.monotonic(), 0)  # (start, credits used)
        self.blocked_until = 0.0
        self.throttled = 0  # 429s sent
        self.early = 0  # requests that came before the Retry-After they were given
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.beyond_cap = 0  # requests for a page past the cap
        self.queue: list[tuple[dt.datetime, int, Callable[[], None]]] = []
        self.skipped: list[Skipped] = []
        self.app = self._build()

    # -- the account: changes as a test or a story makes them ---------------------------

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def create_ticket(
        self,
        subject: str,
        *,
        at: dt.datetime | None = None,
        by: str = "customer",
        priority: int = 2,
        source: int = 1,
        group: str | None = "Support",
        status: int = 2,
        tags: Iterable[str] = (),
        type: str | None = None,
        ticket_id: int | None = None,
    ) -> int:
        """A new ticket; its description is the opening message (an agent's when ``by``
        is "agent": an outbound email, source 10)."""
        with self.lock:
            at = at or self.now
            tid = ticket_id if ticket_id is not None else self._next("ticket")
            self._ids["ticket"] = max(self._ids["ticket"], tid)
            group_id = next((i for i, name in self.groups.items() if name == group), None)
            self.tickets[tid] = {
                "id": tid, "subject": subject, "status": status, "priority": priority,
                "source": 10 if by == "agent" else source, "type": type,
                "requester_id": self._next("contact"),
                "responder_id": None, "group_id": group_id, "company_id": None,
                "product_id": None, "email_config_id": 67000041667,
                "support_email": "support@acme.freshdesk.com",
                "to_emails": ["support@acme.freshdesk.com"], "cc_emails": [], "fwd_emails": [],
                "reply_cc_emails": [], "ticket_cc_emails": [], "ticket_bcc_emails": [],
                "fr_escalated": False, "is_escalated": False, "spam": False, "deleted": False,
                "due_by": stamp(at + dt.timedelta(days=3)),
                "fr_due_by": stamp(at + dt.timedelta(hours=4)),
                "nr_due_by": None, "nr_escalated": False, "custom_fields": {},
                "tags": list(tags), "created_at": stamp(at), "updated_at": stamp(at),
                "association_type": None, "associated_tickets_count": None,
                "structured_description": None,
                "description": f"<div>{subject}</div>", "description_text": subject,
                "stats": dict.fromkeys(STATS_KEYS),
            }  # fmt: skip
            self.tickets[tid]["stats"]["status_updated_at"] = stamp(at)
            self._status_stats(tid, None, status, at)
            self.conversations[tid] = []
            return tid

    def reply(
        self, tid: int, who: str = "customer", public: bool = True, at: dt.datetime | None = None
    ) -> int:
        """A conversation: a customer's reply (incoming), an agent's reply, or an agent's
        private note."""
        with self.lock:
            at = at or self.now
            ticket = self.tickets[tid]
            customer = who == "customer"
            cid = self._next("conversation")
            self.conversations[tid].append({
                "id": cid, "body": "<div>…</div>", "body_text": "…",
                "incoming": customer, "private": not public,
                "user_id": ticket["requester_id"] if customer else AGENT["id"],
                "support_email": None if customer else "support@acme.freshdesk.com",
                "source": 2 if not public else 0, "ticket_id": tid,
                "to_emails": [] if customer or not public else ["customer@example.com"],
                "from_email": None if not public else f"{AGENT['name']} <{AGENT['email']}>",
                "cc_emails": [], "bcc_emails": [], "attachments": [],
                "created_at": stamp(at), "updated_at": stamp(at),
            })  # fmt: skip
            stats = ticket["stats"]
            if customer:
                stats["requester_responded_at"] = stamp(at)
            elif public:
                stats["agent_responded_at"] = stamp(at)
                stats["first_responded_at"] = stats["first_responded_at"] or stamp(at)
            self._touch(tid, at)
            return cid

    def set_status(self, tid: int, status: int, at: dt.datetime | None = None) -> None:
        with self.lock:
            at = at or self.now
            ticket = self.tickets[tid]
            old = ticket["status"]
            if status == old:
                return  # Freshdesk records no change
            ticket["status"] = status
            ticket["stats"]["status_updated_at"] = stamp(at)
            self._status_stats(tid, old, status, at)
            self._touch(tid, at)

    def _status_stats(self, tid: int, old: int | None, new: int, at: dt.datetime) -> None:
        # What each stats key means is unconfirmed; this fake keeps the latest instant of
        # each transition and clears pending_since once the ticket is no longer pending.
        stats = self.tickets[tid]["stats"]
        stats["pending_since"] = stamp(at) if new == 3 else None
        if new == 4:
            stats["resolved_at"] = stamp(at)
        if new == 5:
            stats["closed_at"] = stamp(at)
        if old in (4, 5) and new not in (4, 5):
            stats["reopened_at"] = stamp(at)

    def update(self, tid: int, at: dt.datetime | None = None, **values: Any) -> None:
        """Change ticket properties (priority, group_id, type, tags, ...)."""
        with self.lock:
            self.tickets[tid].update(values)
            self._touch(tid, at or self.now)

    def rate(
        self, tid: int, value: int, at: dt.datetime | None = None, feedback: str | None = None
    ) -> None:
        """A satisfaction answer (103 … -103). A remark also lands on the ticket as a
        survey-feedback conversation (source 6)."""
        with self.lock:
            at = at or self.now
            ticket = self.tickets[tid]
            self.ratings.append({
                "id": self._next("rating"), "survey_id": 1, "user_id": ticket["requester_id"],
                "agent_id": AGENT["id"], "feedback": feedback or "",
                "group_id": ticket["group_id"], "ticket_id": tid,
                "ratings": {"default_question": value},
                "created_at": stamp(at), "updated_at": stamp(at),
            })  # fmt: skip
            if feedback:
                self.reply(tid, "customer", at=at)
                self.conversations[tid][-1].update(source=6, body_text=feedback)

    def delete(self, tid: int, at: dt.datetime | None = None) -> None:
        self.update(tid, at, deleted=True)

    def mark_spam(self, tid: int, at: dt.datetime | None = None) -> None:
        self.update(tid, at, spam=True)

    def _touch(self, tid: int, at: dt.datetime) -> None:
        self.tickets[tid]["updated_at"] = stamp(at)

    # -- the shared scenario ---------------------------------------------------------------

    def load(self, stories: Iterable[Story]) -> dict[str, int]:
        """Queue every step of the stories; returns each story's ticket id. ``play``
        makes them happen."""
        ids = {}
        for story in stories:
            tid = ids[story.key] = self._next("ticket")
            first, *rest = story.steps
            assert first.kind == "message" and first.when == story.created and first.who == story.by
            self._queue(story.created, self._creator(story, tid))
            for n, step in enumerate(rest, start=2):
                if step.kind == "message" and step.who == "system":
                    # Freshdesk's automatic acknowledgement is an email notification, not a
                    # conversation: API v2 has nothing that tells of it.
                    self.skipped.append(Skipped(story.key, n, "auto-reply: not a conversation"))
                elif step.kind == "message":
                    self._queue(step.when, lambda s=step, t=tid: self.reply(t, s.who, s.public))
                elif step.kind == "status":
                    status = STATUS_IDS[step.value]
                    self._queue(step.when, lambda v=status, t=tid: self.set_status(t, v))
                elif step.kind == "priority":
                    value = PRIORITY_IDS[step.value]
                    self._queue(step.when, lambda v=value, t=tid: self.update(t, priority=v))
                else:
                    value, remark = RATING_VALUES[step.score], "Thanks!" if step.score > 3 else None
                    self._queue(
                        step.when, lambda v=value, t=tid, f=remark: self.rate(t, v, None, f)
                    )
        return ids

    def _creator(self, story: Story, tid: int) -> Callable[[], None]:
        def create() -> None:
            self.create_ticket(
                story.subject,
                by=story.by,
                priority=PRIORITY_IDS[story.priority],
                source=SOURCE_IDS[story.channel],
                group=story.queue,
                ticket_id=tid,
            )

        return create

    def _queue(self, when: dt.datetime, action: Callable[[], None]) -> None:
        self.queue.append((when, len(self.queue), action))

    def instants(self) -> list[dt.datetime]:
        """When queued steps happen, in order."""
        return sorted({when for when, _, _ in self.queue})

    def play(self, until: dt.datetime) -> None:
        """Let every queued step up to ``until`` happen (at its own time); then it is
        ``until``."""
        with self.lock:
            due = sorted(item for item in self.queue if item[0] <= until)
            self.queue = [item for item in self.queue if item[0] > until]
            for when, _, action in due:
                self.now = when
                action()
            self.now = until

    # -- HTTP ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """Serve on a free loopback port (as tests/fakes/serve.py does), with the ``Date``
        header telling the fake's time: the server adds that header itself, so the app
        cannot."""
        fake = self

        class Handler(WSGIRequestHandler):
            def date_time_string(self, timestamp: float | None = None) -> str:
                return email.utils.format_datetime(fake.now, usegmt=True)

        server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(5)

    def _build(self) -> Flask:
        app = Flask("fake-freshdesk")
        app.before_request(self._gate)
        app.after_request(self._finish)
        routes: list[tuple[str, Callable[..., Any]]] = [
            ("/api/v2/tickets", self._list_tickets),
            ("/api/v2/tickets/<int:tid>", self._view_ticket),
            ("/api/v2/tickets/<int:tid>/conversations", self._list_conversations),
            ("/api/v2/agents", self._list_agents),
            ("/api/v2/groups", self._list_groups),
            ("/api/v2/ticket_fields", self._ticket_fields),
            ("/api/v2/surveys/satisfaction_ratings", self._list_ratings),
        ]
        for rule, view in routes:
            app.add_url_rule(rule, view.__name__, view)
        return app

    def _credits(self) -> int:
        includes = [i for i in request.args.get("include", "").split(",") if i]
        return 1 + 2 * len(includes)

    def _gate(self) -> Any:
        with self.lock:
            self.requests.append((request.path, dict(request.args)))
            auth = request.headers.get("Authorization", "")
            key = ""
            if auth.startswith("Basic "):
                key = base64.b64decode(auth[6:]).decode().partition(":")[0]
            if self.revoked or key != self.api_key:
                return jsonify(UNAUTHORIZED), 401
            now = time.monotonic()
            if now < self.blocked_until:
                self.early += 1
                return self._too_many(self.blocked_until - now)
            total, seconds = self.budget
            start, used = self.window
            if now - start >= seconds:
                start, used = now, 0
            cost = self._credits()
            if used + cost > total:
                self.window = (start, used)
                return self._too_many(start + seconds - now)
            self.window = (start, used + cost)
            for n, (status, fragment) in enumerate(self.failures):
                if fragment in request.path:
                    del self.failures[n]
                    return Response(f"<html>{status} from the edge</html>", status=status)
            return None

    def _too_many(self, seconds: float) -> Response:
        wait = max(1, math.ceil(seconds))
        self.blocked_until = time.monotonic() + wait
        self.throttled += 1
        response = jsonify({"message": "You have exceeded the limit of requests per minute"})
        response.status_code = 429
        response.headers["Retry-After"] = str(wait)
        return response

    def _finish(self, response: Response) -> Response:
        with self.lock:
            total, _ = self.budget
            used = self.window[1]
            response.headers["X-RateLimit-Total"] = str(total)
            response.headers["X-RateLimit-Remaining"] = str(max(0, total - used))
            response.headers["X-RateLimit-Used-CurrentRequest"] = str(self._credits())
            page = request.args.get("page", "1")
            for n, (fragment, wanted) in enumerate(self.truncations):
                if fragment in request.path and (wanted is None or str(wanted) == page):
                    del self.truncations[n]
                    body = response.get_data()
                    response.set_data(body[: len(body) // 2])
                    break
        return response

    def _paged(self, items: list[Any], default: int = 30) -> Any:
        try:
            per_page = int(request.args.get("per_page", default))
            page = int(request.args.get("page", 1))
        except ValueError:
            return validation_failed("page", "It should be a Positive Integer")
        if not 1 <= per_page <= 100:
            return validation_failed(
                "per_page", "It should be a Positive Integer less than or equal to 100"
            )
        if page < 1:
            return validation_failed("page", "It should be a Positive Integer")
        chunk = items[(page - 1) * per_page : page * per_page]
        response = jsonify(chunk)
        if page * per_page < len(items):
            query = urlencode({**request.args, "page": page + 1})
            response.headers["Link"] = f'<{request.base_url}?{query}>; rel="next"'
        return response

    def _render(self, ticket: dict[str, Any], includes: set[str], view: bool = False) -> Any:
        out = {k: v for k, v in ticket.items() if k not in ("stats", "description")}
        out.pop("description_text")
        if view or "description" in includes:
            out["description"] = ticket["description"]
            out["description_text"] = ticket["description_text"]
        if "stats" in includes:
            out["stats"] = dict(ticket["stats"])
        if "requester" in includes:
            rid = ticket["requester_id"]
            out["requester"] = {
                "id": rid,
                "name": f"Customer {rid}",
                "email": f"c{rid}@example.com",
                "mobile": None,
                "phone": None,
            }
        return out

    def _includes(self) -> set[str] | None:
        includes = {i for i in request.args.get("include", "").split(",") if i}
        return includes if includes <= INCLUDES else None

    def _list_tickets(self) -> Any:
        with self.lock:
            includes = self._includes()
            if includes is None:
                return validation_failed("include", "It should be one of these values: "
                                         "'requester,stats,company,description'")  # fmt: skip
            if int(request.args.get("page", 1)) > self.max_pages:
                self.beyond_cap += 1
                return validation_failed("page", PAGE_CAP_MESSAGE)
            kind = request.args.get("filter")
            if kind in ("deleted", "spam"):
                tickets = [t for t in self.tickets.values() if t[kind]]
            elif kind is None:
                tickets = [t for t in self.tickets.values() if not t["deleted"] and not t["spam"]]
            else:
                return validation_failed("filter", "It should be one of these values: "
                                         "'new_and_my_open,watching,spam,deleted'")  # fmt: skip
            relaxed = kind is not None and self.filters_ignore_since
            since = request.args.get("updated_since")
            if since and not relaxed:
                tickets = [t for t in tickets if parse(t["updated_at"]) >= parse(since)]
            elif not since:
                month_ago = self.now - dt.timedelta(days=30)
                tickets = [t for t in tickets if parse(t["created_at"]) >= month_ago]
            order_by, order_type = "created_at", "desc"
            if not relaxed:
                order_by = request.args.get("order_by", order_by)
                order_type = request.args.get("order_type", order_type)
            tickets.sort(key=lambda t: (t[order_by], t["id"]), reverse=order_type == "desc")
            return self._paged([self._render(t, includes) for t in tickets])

    def _view_ticket(self, tid: int) -> Any:
        with self.lock:
            ticket = self.tickets.get(tid)
            if ticket is None:
                return Response(status=404)
            return jsonify(self._render(ticket, self._includes() or set(), view=True))

    def _list_conversations(self, tid: int) -> Any:
        with self.lock:
            if tid not in self.tickets:
                return Response(status=404)
            items = list(self.conversations[tid])
            return self._paged(items[::-1] if self.newest_first else items)

    def _list_agents(self) -> Any:
        with self.lock:
            agents = [{"id": a["id"], "available": True, "occasional": False, "ticket_scope": 1,
                       "signature": None, "created_at": stamp(T0), "updated_at": stamp(T0),
                       "contact": {"name": a["name"], "email": a["email"], "active": True}}
                      for a in self.agents]  # fmt: skip
            return self._paged(agents)

    def _list_groups(self) -> Any:
        with self.lock:
            return self._paged([{"id": i, "name": name, "description": None}
                                for i, name in self.groups.items()])  # fmt: skip

    def _ticket_fields(self) -> Any:
        with self.lock:
            if self.choices_as_objects:
                choices: Any = [{"id": k, "label": v[0], "value": v[0]}
                                for k, v in self.statuses.items()]  # fmt: skip
            else:
                choices = {str(k): v for k, v in self.statuses.items()}
            return jsonify([
                {"id": 1, "name": "requester", "label": "Search a requester",
                 "type": "default_requester", "default": True},
                {"id": 2, "name": "status", "label": "Status", "type": "default_status",
                 "default": True, "choices": choices},
            ])  # fmt: skip

    def _list_ratings(self) -> Any:
        with self.lock:
            since = request.args.get("created_since")
            ratings = [
                r for r in self.ratings if not since or parse(r["created_at"]) >= parse(since)
            ]
            return self._paged(ratings)
