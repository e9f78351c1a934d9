"""The Request Tracker connector against a real RT 5.0.3 (Debian's rt5-standalone on
loopback, its own SQLite database; tests/services.py). The tests create, reply to, comment
on, re-prioritize and resolve tickets through REST2 as a customer (unprivileged) and an agent
(privileged), then sync them: page by page into a real monitor (the shared scenario as far
as RT can tell it), resumed from a stored cursor, and with a revoked token; and through a
fault-injecting proxy (tests/fakes/proxy.py) that rate-limits, fails, drops and truncates
as the proxies in front of a real RT do.

RT stamps every transaction with its own clock, so the server runs under libfaketime
(``request_tracker(faketime_file=...)``): the scenario sets RT's clock to each step's instant
before making that step's REST2 call, and the clocks the monitor stores are compared with the
engine's answer for the story itself. The history RT gives back is compared, times included,
with :func:`as_told_by_rt` (what the story's steps become in RT). Every other test runs with
the file absent, on the real clock. The server runs with ``$Timezone`` Europe/Berlin (the
connector's TicketSQL dates name their zone, UTC), and each test keeps to its own queues or
time window.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import select

import rules
from connectors import FatalError, RetriableError, connector_types
from connectors.base import Batch
from connectors.rt import RtConnector
from connectors.rt_mapping import ValueMap
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import EventRow, Ticket, db
from rules.events import Created, Event, FieldChange, Message, Rating, Removed
from tests.connectors import harness
from tests.connectors.harness import Store, engine_clocks, stored_clocks
from tests.fakes import scenario
from tests.fakes.proxy import Proxy, proxy
from tests.fakes.scenario import STORIES, T0, Story
from tests.services import RequestTracker, request_tracker

RULES = rules.load_rules(scenario.RULES)
NOW = T0 + dt.timedelta(days=2)  # the monitor's clock when it evaluates the story
CUSTOMER, AGENT = "customer@example.test", "agent"
PRIORITY = {"low": 10, "normal": 30, "high": 60, "urgent": 90}  # in RT's default bands
STATUS = {
    "pending": "stalled",
    "on_hold": "stalled",
    "open": "open",
    "solved": "resolved",
    "closed": "rejected",
}  # fmt: skip  (the story's status -> RT's)
INACTIVE = ("new", "resolved", "rejected")  # what a correspondence opens (RT's lifecycle)


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestTracker]:
    clock = tmp_path_factory.mktemp("rt-clock") / "faketime"  # absent: the real time
    with request_tracker(timezone="Europe/Berlin", faketime_file=clock) as server:
        yield server


class Desk:
    """Acting in RT through REST2 as its users, and keeping the history RT should report
    (``expected``: per ticket, what the test did and what RT's default scrips add)."""

    def __init__(self, rt: RequestTracker) -> None:
        self.rt = rt
        self.expected: dict[str, list[tuple[Any, ...]]] = {}
        self.status: dict[str, str] = {}

    def call(self, who: str, method: str, path: str, body: dict[str, Any]) -> Any:
        answer = requests.request(
            method, f"{self.rt.url}/REST/2.0{path}", json=body, timeout=30,
            auth=(who, self.rt.password),
        )  # fmt: skip
        assert answer.status_code in (200, 201, 204), answer.text
        return answer.json() if answer.status_code != 204 else None

    def create(self, who: str, queue: str, subject: str, priority: str = "normal") -> str:
        body = {"Queue": queue, "Subject": subject, "Requestor": CUSTOMER,
                "Content": f"{subject}.", "ContentType": "text/plain",
                "Priority": PRIORITY[priority]}  # fmt: skip
        tid = str(self.call(who, "POST", "/ticket", body)["id"])
        role = _role(who)
        self.expected[tid] = [
            ("created", role, "new", priority, queue),
            ("message", role, True),
            ("message", "system", True),
        ]  # fmt: skip  (RT's auto-reply)
        self.status[tid] = "new"
        return tid

    def reply(self, tid: str, who: str, public: bool = True) -> None:
        kind = "correspond" if public else "comment"
        self.call(who, "POST", f"/ticket/{tid}/{kind}",
                  {"Content": "A word.", "ContentType": "text/plain"})  # fmt: skip
        self.expected[tid].append(("message", _role(who), public))
        if public and self.status[tid] in INACTIVE:
            self._now(tid, "open")  # RT's "On Correspond Open Inactive Tickets" scrip

    def set_status(self, tid: str, status: str, who: str = AGENT) -> None:
        self.call(who, "PUT", f"/ticket/{tid}", {"Status": status})
        self._now(tid, status)

    def set_priority(self, tid: str, priority: str) -> None:
        self.call(AGENT, "PUT", f"/ticket/{tid}", {"Priority": PRIORITY[priority]})
        self.expected[tid].append(("field", "priority", priority))

    def _now(self, tid: str, status: str) -> None:
        if status != self.status[tid]:
            normalized = ValueMap({}, {}).status(status)
            self.expected[tid].append(("field", "status", normalized))
            self.status[tid] = status

    def step(self, tid: str, step: scenario.Step) -> None:
        """One of a story's steps as far as RT can: ratings are not RT's, the auto-reply
        is its own, and "pending" is RT's stalled (on_hold)."""
        if step.kind == "message" and step.who != "system":
            self.reply(tid, AGENT if step.who == "agent" else CUSTOMER, step.public)
        elif step.kind == "status":
            self.set_status(tid, STATUS[step.value])
        elif step.kind == "priority":
            self.set_priority(tid, step.value)


def tell(rt: RequestTracker) -> dict[str, str]:
    """Every story told to RT at its own instants, in the order things happened: RT's clock
    is set to each step's instant before its REST2 call. A story's first message is the
    content of its creation. A ticket in General (not watched) is created too. Returns
    each story's ticket id; RT is on the real clock again afterwards."""
    desk = Desk(rt)
    timeline = [(story.created, n, -1) for n, story in enumerate(STORIES)]  # -1: creation
    timeline += [
        (step.when, n, i)
        for n, story in enumerate(STORIES)
        for i, step in enumerate(story.steps)
        if i > 0 or step.kind != "message"
    ]
    ids: dict[str, str] = {}
    try:
        rt.set_clock(T0)
        desk.create(CUSTOMER, "General", "Not in the watched queues")
        for when, n, i in sorted(timeline):
            story = STORIES[n]
            rt.set_clock(when)
            if i < 0:
                who = AGENT if story.by == "agent" else CUSTOMER
                ids[story.key] = desk.create(who, story.queue, story.subject, story.priority)
            else:
                desk.step(ids[story.key], story.steps[i])
    finally:
        rt.set_clock(None)
    return ids


def as_told_by_rt(story: Story) -> list[Event]:
    """The story's history as RT tells it (what :func:`tell` does, plus what RT's default
    scrips add): no ratings (RT has none); RT's own auto-reply, a system message at the
    creation, instead of the story's ("refund" at 11 minutes); a public reply opens a new
    or solved ticket at once (so "renewal" opens at the customer's answer, 300 minutes, not
    at 301); "pending" is RT's stalled, i.e. on_hold, and setting the status a ticket has
    is no change; a REST2 creation is channel web."""
    told: list[Event] = []
    status = "new"
    for n, event in enumerate(scenario.expected_events(story)):
        if isinstance(event, Created):
            told.append(dataclasses.replace(event, fields={**event.fields, "channel": "web"}))
        elif isinstance(event, Rating) or isinstance(event, Message) and event.author == "system":
            continue
        elif isinstance(event, FieldChange) and event.field == "status":
            new = "on_hold" if event.new == "pending" else event.new
            if new != status:
                told.append(dataclasses.replace(event, new=new))
            status = new
        else:
            told.append(event)
        if n == 1:  # the creation's content, then RT's auto-reply
            told.append(Message(f"{story.key}-auto-reply", event.at, "system"))
        elif isinstance(event, Message) and event.author != "system" and event.public:
            if status in ("new", "solved", "closed"):
                told.append(FieldChange(f"{event.id}-opened", event.at, "status", "open"))
                status = "open"
    return [dataclasses.replace(event, seq=n) for n, event in enumerate(told)]


def _role(who: str) -> str:
    return "agent" if who == AGENT else "customer"


def shape(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """A history in order, as the Desk writes its expectations (no times or ids)."""
    out: list[tuple[Any, ...]] = []
    for e in rules.in_order(events):
        if isinstance(e, Created):
            f = e.fields
            out.append(("created", e.by, f["status"], f["priority"], f["queue"]))
        elif isinstance(e, Message):
            out.append(("message", e.author, e.public))
        elif isinstance(e, FieldChange):
            out.append(("field", e.field, e.new))
        elif isinstance(e, Removed):
            out.append(("removed", e.reason))
    return out


def connect(rt: RequestTracker, since: dt.datetime, per_page: int = 2, **options: Any):
    given = {"url": rt.url, "token": rt.token, "start": since}
    return RtConnector("rt", {**given, **options}, per_page=per_page)


def settle() -> dt.datetime:
    """Wait for the next second: RT's times are to the second, and a ticket changed in the
    second a search runs is (rightly) read again by the next sync."""
    time.sleep(1.05 - time.time() % 1)
    return dt.datetime.now(dt.UTC)


# -- the scenario through the monitor --------------------------------------------------------


def test_registered_as_rt():
    assert connector_types()["rt"] is RtConnector
    connector = RtConnector("rt", {"url": "http://rt.example/", "token": "x"})
    assert connector.ticket_url("7") == "http://rt.example/Ticket/Display.html?id=7"


def tell_story(rt: RequestTracker, tmp_path: Path) -> tuple[Any, dict[str, str]]:
    """The scenario told to RT (:func:`tell`) and synced once into a real monitor whose
    clock is ``NOW``. Returns the app and each story's ticket id."""
    ids = tell(rt)
    app, _ = monitor_app(tmp_path, rt, NOW)
    assert app.extensions["slamon"].scheduler.sync_once("rt")
    return app, ids


def test_the_scenario_through_a_real_rt(rt, tmp_path):
    app, ids = tell_story(rt, tmp_path)

    # The connector's own view, page by page (2 tickets a page: 3 pages): the story as RT
    # tells it, at the story's own instants.
    store = Store()
    batches = store.sync(monitor_app(tmp_path / "view", rt, NOW)[1])
    assert batches[-1].done and len(batches) >= 3
    assert sorted(store.delivered) == sorted(ids.values())  # each once; General left out
    for story in STORIES:
        tid = ids[story.key]
        assert harness.shape(store.history(tid)) == harness.shape(as_told_by_rt(story)), story.key
        fields = store.fields[tid]
        statuses = [e.new for e in as_told_by_rt(story) if isinstance(e, FieldChange)
                    and e.field == "status"]  # fmt: skip
        assert fields["status"] == (statuses or ["new"])[-1], story.key
        assert fields["priority"] == story.priority_at_end()
        assert fields["queue"] == story.queue and fields["requester"] == CUSTOMER
        assert fields["subject"] == story.subject and fields["channel"] == "web"  # REST2
        assert fields["url"] == f"{rt.url}/Ticket/Display.html?id={tid}"

    # What the monitor stored gives the engine's clocks for the story itself.
    with app.app_context():
        for story in STORIES:
            tid = ids[story.key]
            ticket = db.session.scalars(select(Ticket).where(Ticket.source_id == tid)).one()
            stored = stored_clocks(ticket.id)
            assert stored, story.key
            # What RT cannot tell (as_told_by_rt) changes no clock: no rating, the auto-reply
            # and new -> open start or stop none, and on_hold pauses as pending does.
            story_clocks = rules.evaluate("rt", scenario.expected_events(story), RULES, NOW)
            assert stored == engine_clocks(story_clocks), story.key
            assert ticket.status == store.fields[tid]["status"]
            events = db.session.query(EventRow).filter(EventRow.ticket_id == ticket.id).count()
            assert events == len(store.events[tid]), story.key
        assert db.session.query(Ticket).count() == len(STORIES)


def monitor_app(tmp_path: Path, rt: RequestTracker, now: dt.datetime) -> tuple[Any, RtConnector]:
    """A monitor on temp SQLite with the connector built from its config's options."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "rt", "type": "rt", "url": rt.url, "token": rt.token,
                        "queues": ["Support", "Billing"],
                        "start": (T0 - dt.timedelta(days=1)).isoformat()}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path, now=now)
    spec = next(c for c in loaded.connectors if c.name == "rt")
    connector = RtConnector("rt", spec.options(), per_page=2)
    app = create_app(loaded, clock=lambda: now, connectors={"rt": connector})
    upgrade(app)
    register_connectors(app)
    return app, connector


# -- incremental, resumed --------------------------------------------------------------------


def test_a_resumed_sync_brings_only_what_changed(rt):
    desk = Desk(rt)
    begin = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    first = [desk.create(CUSTOMER, "General", f"Resume {n}") for n in range(3)]
    desk.reply(first[1], AGENT)
    settle()
    store = Store()
    store.sync(connect(rt, begin, queues=["General"]))
    assert sorted(store.delivered) == sorted(first)
    again = Store()
    again.cursor = store.cursor
    nothing = again.sync(connect(rt, begin, queues=["General"]))
    assert not any(b.changes for b in nothing) and nothing[-1].done

    fresh = desk.create(CUSTOMER, "General", "Resume later")
    desk.reply(first[0], AGENT, public=False)
    desk.set_status(first[2], "resolved")
    settle()
    restarted = Store()  # a new process with the stored cursor
    restarted.cursor, restarted.events = store.cursor, store.events
    restarted.sync(connect(rt, begin, queues=["General"]))
    assert sorted(restarted.delivered) == sorted([fresh, first[0], first[2]])
    for tid in (fresh, *first):
        assert shape(restarted.history(tid)) == desk.expected[tid], tid
    assert restarted.fields[first[2]]["status"] == "solved"


# -- failures ------------------------------------------------------------------------------


def test_a_revoked_token_stops_the_connector_without_the_token(rt):
    since = settle()  # nothing changes from here: one search, no history to read
    assert Store().sync(connect(rt, since, token=rt.spare))[-1].done
    rt.revoke(rt.spare)
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(rt, since, token=rt.spare))
    assert "HTTP 401" in str(caught.value) and rt.spare not in str(caught.value)
    wrong = {"token": None, "username": "root", "password": "not-the-password"}
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(rt, since, **wrong))
    assert "HTTP 401" in str(caught.value) and "not-the-password" not in str(caught.value)
    with pytest.raises(FatalError, match="token, or username"):
        RtConnector("rt", {"url": rt.url, "username": "root"})
    basic = {"token": None, "username": "root", "password": rt.password}
    assert Store().sync(connect(rt, since, **basic))[-1].done  # basic auth works too
    assert Store().sync(connect(rt, since))[-1].done  # the other token still does


def test_deleted_tickets_are_removed(rt):
    desk = Desk(rt)
    begin = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    tid = desk.create(CUSTOMER, "General", "Delete me")
    desk.call(AGENT, "DELETE", f"/ticket/{tid}", {})
    settle()
    store = Store()
    store.sync(connect(rt, begin, queues=["General"]))
    assert shape(store.history(tid))[-1] == ("removed", "deleted")
    assert store.fields[tid]["status"] == "closed"


# -- mappings ------------------------------------------------------------------------------


def test_default_mappings_overrides_and_unknown_values_noted_once():
    values = ValueMap({}, {})
    statuses = ("new", "open", "stalled", "resolved", "rejected")
    assert [values.status(s) for s in statuses] == ["new", "open", "on_hold", "solved", "closed"]
    numbers = ("0", "24", "25", "49", "50", "74", "75", "100", None, "Low", "Medium", "High")
    assert [values.priority(p) for p in numbers] == [
        "low", "low", "normal", "normal", "high", "high", "urgent", "urgent", "normal",
        "low", "normal", "high",
    ]  # fmt: skip
    assert values.notes() == []
    custom = ValueMap({"stalled": "pending", "escalated": "open"}, {"50": "normal"})
    assert custom.status("stalled") == "pending" and custom.priority("50") == "normal"
    assert [custom.status("weird"), custom.status("weird"), custom.priority("p1")] == [
        "open", "open", "normal"
    ]  # fmt: skip
    assert custom.notes() == [
        "rt status 'weird' counted as open; map it under `statuses:`",
        "rt priority 'p1' counted as normal; map it under `priorities:`",
    ]
    assert custom.notes() == []


# -- faults between the connector and RT (a proxy in front of the real server) -------------
#
# Real RT neither rate-limits nor truncates, but the proxies and load balancers in front of
# it do: tests/fakes/proxy.py forwards to the real RT and answers chosen requests itself.

SEARCH = "/REST/2.0/tickets?"  # the ticket search (a history is /REST/2.0/ticket/N/history)


@pytest.fixture
def front(rt) -> Iterator[Proxy]:
    with proxy(rt.url) as px:
        yield px


def own_queue(rt: RequestTracker, queue: str, count: int) -> tuple[Desk, list[str], dt.datetime]:
    """A queue of the test's own with ``count`` tickets (one answered), settled."""
    desk = Desk(rt)
    desk.call(AGENT, "POST", "/queue", {"Name": queue})
    begin = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    ids = [desk.create(CUSTOMER, queue, f"{queue} {n}") for n in range(count)]
    desk.reply(ids[0], AGENT)
    settle()
    return desk, ids, begin


def assert_all_once(store: Store, desk: Desk, ids: Sequence[str]) -> None:
    assert Counter(store.delivered) == Counter(ids)  # every ticket, each exactly once
    for tid in ids:
        assert shape(store.history(tid)) == desk.expected[tid], tid


def test_a_rate_limited_sync_through_a_proxy_waits_as_told(rt, front):
    desk, ids, begin = own_queue(rt, "Limited", 3)
    front.fail(SEARCH, 429, 429, retry_after=1)  # the first search, twice
    front.fail(f"/ticket/{ids[2]}/history", 429, retry_after=1)  # on page two
    store = Store()
    assert store.sync(connect(rt, begin, url=front.url, queues=["Limited"]))[-1].done
    assert front.pending() == []  # every 429 was given ...
    assert [h.status for h in front.hits(SEARCH)][:3] == [429, 429, 200]
    assert [h.status for h in front.hits(f"/ticket/{ids[2]}/history")] == [429, 200]
    assert front.early == 0  # ... and nothing came before its Retry-After was over
    assert_all_once(store, desk, ids)


def test_a_5xx_burst_and_a_dropped_connection_through_a_proxy_are_ridden_out(rt, front):
    desk, ids, begin = own_queue(rt, "Bursts", 3)
    front.fail("/history", 503, 503, 503)
    front.fail(SEARCH, "drop", after=1)  # the second search page
    store = Store()
    assert store.sync(connect(rt, begin, url=front.url, queues=["Bursts"]))[-1].done
    assert front.pending() == []
    assert [h.status for h in front.hits("/history")][:4] == [503, 503, 503, 200]
    assert [h.status for h in front.hits(SEARCH)][1:3] == [0, 200]  # dropped, asked again
    assert_all_once(store, desk, ids)


@pytest.mark.parametrize("where", ["search", "history"])
def test_a_truncated_page_keeps_the_cursor_before_it(rt, front, where):
    queue = f"Truncated {where}"
    desk, ids, begin = own_queue(rt, queue, 3)
    # Two tickets a page: the second search page, or the first history read for it.
    front.fail(SEARCH if where == "search" else "/history", "truncate",
               after=1 if where == "search" else 2)  # fmt: skip
    store, stored = Store(), list[Batch]()
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(rt, begin, url=front.url, queues=[queue]), into=stored)
    assert front.pending() == []
    # Page one is stored (and, for the history, the search again from its mark, which
    # finds page one's tickets and nothing fresh); the page that failed is not.
    assert stored and store.cursor == stored[-1].cursor
    first = set(store.delivered)
    assert len(store.delivered) == 2 and first < set(ids)
    # the cursor is before the failed page: it knows no ticket of it
    assert store.cursor and set(store.cursor["seen"]) <= first
    store.sync(connect(rt, begin, url=front.url, queues=[queue]))  # the next poll
    assert_all_once(store, desk, ids)


def test_a_404_a_proxy_wrote_is_no_deletion(rt, front):
    desk, ids, begin = own_queue(rt, "Misrouted", 2)
    front.fail("/history", 404)  # the proxy's own page, not RT's JSON
    store = Store()
    with pytest.raises(RetriableError, match="404 that RT did not write"):
        store.sync(connect(rt, begin, url=front.url, queues=["Misrouted"]))
    assert store.delivered == []  # no ticket was taken for deleted
    store.sync(connect(rt, begin, url=front.url, queues=["Misrouted"]))
    assert_all_once(store, desk, ids)


def test_a_wrong_token_through_a_proxy_is_fatal_without_the_token(rt, front):
    since = settle()
    assert Store().sync(connect(rt, since, url=front.url))[-1].done  # the real token passes
    user, secret = rt.token.rsplit("-", 1)
    wrong = f"{user}-{'0' * len(secret)}"  # RT's own user, not its secret: as when revoked
    assert wrong != rt.token
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(rt, since, url=front.url, token=wrong))
    assert "HTTP 401" in str(caught.value) and wrong not in str(caught.value)
    assert secret not in str(caught.value) and "0" * len(secret) not in str(caught.value)
    assert front.hits()[-1].status == 401  # RT's answer, passed on
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(rt, since, url=front.url, token=None, username="root",
                             password="not-the-password"))  # fmt: skip
    assert "HTTP 401" in str(caught.value) and "not-the-password" not in str(caught.value)
