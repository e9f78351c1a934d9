"""The Zammad connector against a fake Zammad on loopback (tests/fakes/zammad.py): the
condition search on ``updated_at`` walked by key, in both of its response shapes, resumed
from a stored cursor, through rate limits, 5xx bursts, truncated pages and a revoked token;
the default mappings and their overrides; merges and removals; tags and their history (a
``no-sla`` tag added later ending a policy in a real monitor); hard deletions found by the
check of the open tickets kept in the cursor; webhook signatures; and the shared scenario,
synced into a real monitor, giving the clocks the engine gives for the story itself.

What Zammad cannot tell of the scenario: satisfaction ratings (its API has none), so they
are left out of the histories compared here (:func:`zammad_events`); they change no clock,
which the scenario test checks. ``solved`` and ``urgent`` it can tell through config: the
site's ``closed`` state maps to solved (Zammad reopens a closed ticket on a customer's
follow-up) and the admin-added priority ``4 urgent`` to urgent (:data:`SITE`)."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import select

import rules
from connectors import Batch, FatalError, RetriableError, connector_types
from connectors.zammad import OVERLAP, ZammadConnector
from connectors.zammad_mapping import ValueMap
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import EventRow, Ticket, db
from rules.events import Created, Event, FieldChange, Message, Rating, Removed
from tests.connectors.harness import Store, shape, stored_clocks, webhook_refetch
from tests.fakes import scenario
from tests.fakes.scenario import STORIES, T0, minutes
from tests.fakes.serve import FakeServer
from tests.fakes.zammad import ROLES, FakeZammad

TOKEN = "zm-t0ken-4c3b2a1f9e8d7c6b"
NOW = T0 + dt.timedelta(days=2)
START = T0 - dt.timedelta(days=1)
RULES = rules.load_rules(scenario.RULES)
SITE = {"statuses": {"closed": "solved"}, "priorities": {"4 urgent": "urgent"}}
SECRET = "zammad-signature-token"
BODY = b'{"ticket":{"id":5,"title":"Printer on fire"},"article":null}'
SIGNED = {"X-Hub-Signature": "sha1=fcc6f0f39ca469a2229e209d653a0ba45e7eceba"}  # openssl dgst
SEARCH = "/api/v1/tickets/search"


def iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(params=[6], ids=["zammad6"])
def fake(request: Any, server: FakeServer) -> FakeZammad:
    return server.serve(FakeZammad(TOKEN, version=request.param))


@pytest.fixture
def url(server: FakeServer, fake: FakeZammad) -> str:
    return server.url


def connect(
    url: str, per_page: int = 2, remember: int = 5000, check: int = 200, **options: Any
) -> ZammadConnector:
    given = {"url": url, "token": TOKEN, "start": START, **SITE}
    return ZammadConnector("zm", {**given, **options}, clock=lambda: NOW, per_page=per_page,
                           remember=remember, check=check)  # fmt: skip


def zammad_events(story: scenario.Story) -> list[Event]:
    """The scenario's history less what Zammad cannot tell: satisfaction ratings."""
    return [e for e in scenario.expected_events(story) if not isinstance(e, Rating)]


def searches(fake: FakeZammad) -> list[dict[str, Any]]:
    """The walk's searches (by ``updated_at``)."""
    return [body for method, path, body in fake.log
            if path.startswith(SEARCH) and "ticket.updated_at" in body["condition"]]  # fmt: skip


def checks(fake: FakeZammad) -> list[list[str]]:
    """The ids each deletion check's search asked for."""
    return [body["condition"]["ticket.id"]["value"] for method, path, body in fake.log
            if path.startswith(SEARCH) and "ticket.id" in body["condition"]]  # fmt: skip


def since(body: dict[str, Any]) -> str:
    return str(body["condition"]["ticket.updated_at"]["value"])


# -- the incremental sync ------------------------------------------------------------------


def test_registered_as_zammad():
    assert connector_types()["zammad"] is ZammadConnector


@pytest.mark.parametrize("fake", [5, 6], ids=["zammad5-assets", "zammad6-array"], indirect=True)
def test_a_multi_page_sync_delivers_every_story_once(fake, url):
    ids = fake.load(STORIES)
    store = Store()
    batches = store.sync(connect(url, per_page=2))
    # By updated_at: refund, printer | invoice, renewal | login. Each query starts at the
    # newest instant delivered (inclusive), so it sees that ticket again and skips it.
    assert [len(b.changes) for b in batches] == [2, 1, 1, 1, 0]
    assert [b.done for b in batches] == [False, False, False, False, True]
    assert sorted(store.delivered) == sorted(str(i) for i in ids.values())  # each once
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(zammad_events(story)), story.key
    bodies = searches(fake)
    assert [since(b) for b in bodies] == [iso(START)] + [
        iso(minutes(m)) for m in (181, 200, 301, 400)
    ]
    for body in bodies:
        assert "query" not in body  # the SQL path: no Elasticsearch, no index lag
        assert body["condition"]["ticket.updated_at"]["operator"] == "after (absolute)"
        assert (body["sort_by"], body["order_by"], body["page"], body["per_page"]) == (
            "updated_at", "asc", 1, 2
        )  # fmt: skip
    assert [b.cursor["since"] for b in batches] == [
        iso(minutes(m)) for m in (181, 200, 301, 400, 400)
    ]
    assert batches[-1].cursor["seen"] == {str(ids["login"]): iso(minutes(400))}
    invoice = store.fields[str(ids["invoice"])]
    assert invoice["queue"] == "Billing" and invoice["priority"] == "urgent"
    assert invoice["status"] == "solved" and invoice["channel"] == "email"
    assert invoice["url"] == f"{url}/#ticket/zoom/{ids['invoice']}"
    assert invoice["requester"] == "invoice@x.test"
    assert invoice["subject"] == "Invoice address wrong"
    assert store.fields[str(ids["login"])]["channel"] == "web"
    assert [b.newest for b in batches] == [minutes(m) for m in (181, 200, 301, 400)] + [NOW]
    paths = [path.split("?")[0] for _, path, _ in fake.log]
    for index in ("/api/v1/ticket_states", "/api/v1/ticket_priorities", "/api/v1/groups"):
        assert paths.count(index) == 1  # reference data once per sync


def test_tickets_sharing_one_instant_are_read_page_by_page(fake, url):
    customer = fake.user("Cy Customer")
    tickets = [fake.create(minutes(5), customer, title=f"T{n}") for n in range(5)]
    later = fake.create(minutes(9), customer)
    store = Store()
    batches = store.sync(connect(url, per_page=2))
    assert sorted(store.delivered) == sorted(str(t) for t in [*tickets, later])
    assert len(store.delivered) == 6  # each once
    bodies = searches(fake)
    # The run at minute 5 outgrows a page: pages 2 and 3 of the same query, then onwards.
    assert [(since(b), b["page"]) for b in bodies] == [
        (iso(START), 1), (iso(minutes(5)), 1), (iso(minutes(5)), 2), (iso(minutes(5)), 3),
        (iso(minutes(9)), 1),
    ]  # fmt: skip
    assert batches[-1].done and batches[-1].cursor["since"] == iso(minutes(9))


def test_the_first_sync_reaches_back_to_start(fake, url):
    customer = fake.user("Cy Customer")
    old, new = fake.create(minutes(-2000), customer), fake.create(minutes(0), customer)
    store = Store()
    store.sync(connect(url, start=minutes(-60)))
    assert store.delivered == [str(new)] and str(old) not in store.events
    assert since(searches(fake)[0]) == iso(minutes(-60))


def test_a_resumed_sync_brings_only_what_changed(fake, url):
    ids = fake.load(STORIES)
    store = Store()
    store.sync(connect(url))
    before = {t: set(events) for t, events in store.events.items()}
    agent = next(u for u, user in fake.users.items() if user["role_ids"] == [2])
    newcomer = fake.user("Nia Newcomer")
    fresh = fake.create(minutes(500), newcomer, title="New one")
    fake.article(ids["refund"], minutes(510), agent, "Agent")
    fake.change(ids["refund"], minutes(510), agent, state="pending reminder")

    restarted = Store()
    restarted.cursor, restarted.events = store.cursor, store.events  # a new process
    batches = restarted.sync(connect(url))
    assert sorted(restarted.delivered) == sorted([str(fresh), str(ids["refund"])])
    # The first query reaches back by the overlap; the ticket seen there is not fetched.
    first = searches(fake)[-len(batches)]
    assert since(first) == iso(minutes(400) - OVERLAP)
    refund = str(ids["refund"])
    added = set(restarted.events[refund]) - before[refund]
    assert {type(restarted.events[refund][e]) for e in added} == {Message, FieldChange}
    assert len(added) == 2
    assert shape(restarted.history(fresh))[0][:3] == ("created", minutes(500), "customer")
    fetched = [p.rstrip("?") for _, p, _ in fake.log if "/ticket_history/" in p]
    assert fetched.count(f"/api/v1/ticket_history/{ids['login']}") == 1  # not again
    again = restarted.sync(connect(url))  # nothing new: one empty, final batch
    assert [(len(b.changes), b.done) for b in again] == [(0, True)]
    assert again[0].cursor == batches[-1].cursor


def test_the_overlap_catches_a_late_commit(fake, url):
    customer = fake.user("Cy Customer")
    fake.create(minutes(10), customer)
    store = Store()
    store.sync(connect(url))
    assert store.cursor == {"since": iso(minutes(10)), "seen": {"1": iso(minutes(10))},
                            "open": [1], "checked": 0}  # fmt: skip
    # A change stamped before the newest one delivered, committed after that sync.
    late = fake.create(minutes(8), customer)
    store.sync(connect(url))
    assert store.delivered == ["1", str(late)]


def test_a_repeated_page_ends_the_sync(fake, url):
    customer = fake.user("Cy Customer")
    for n in range(3):
        fake.create(minutes(5), customer, title=f"T{n}")
    fake.repeat = True  # the search ignores `page`
    store = Store()
    batches = store.sync(connect(url, per_page=2))
    assert batches[-1].done and not batches[-1].changes
    assert any("repeated a page" in note for note in store.notes)
    assert len(searches(fake)) == 3


# -- failures ------------------------------------------------------------------------------


def test_a_rate_limited_sync_waits_as_told(fake, url):
    ids = fake.load(STORIES)
    fake.limit(every=6, retry_after=1)
    store = Store()
    store.sync(connect(url, per_page=5))
    assert fake.windows >= 1 and fake.limited == fake.windows  # the budget ran out ...
    assert fake.early == 0  # ... and nothing came before the wait was over
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(zammad_events(story))


def test_a_5xx_burst_is_ridden_out(fake, url):
    ids = fake.load(STORIES)
    fake.fail("/ticket_history/", 500, 502, 503)
    store = Store()
    assert store.sync(connect(url))[-1].done
    assert fake.faults == [("/ticket_history/", [])]
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(zammad_events(story))


@pytest.mark.parametrize("where", ["search", "articles"])
def test_a_truncated_page_keeps_the_cursor_before_it(fake, url, where):
    ids = fake.load(STORIES)
    # By updated_at: refund, printer | invoice, renewal | login.
    if where == "search":
        fake.fail(SEARCH, "pass", "truncate")
    else:
        fake.fail(f"/by_ticket/{ids['invoice']}", "truncate")
    store = Store()
    stored: list[Batch] = []
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(url), into=stored)
    assert len(stored) == 1 and store.cursor == stored[0].cursor  # page one, no further
    assert set(store.events) == {str(ids["refund"]), str(ids["printer"])}
    store.sync(connect(url))  # the next poll reads the page again, and the rest
    assert sorted(store.delivered) == sorted(str(i) for i in ids.values())
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(zammad_events(story))


def test_a_revoked_token_stops_the_connector_without_the_token(fake, url):
    fake.load(STORIES[:1])
    Store().sync(connect(url))
    fake.revoke()
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(url))
    assert "HTTP 401" in str(caught.value) and TOKEN not in str(caught.value)
    answer = requests.post(f"{url}{SEARCH}", headers={"Authorization": f"Token token={TOKEN}"})
    assert answer.status_code == 401 and "X-Failure" in answer.headers
    assert answer.json() == {"error": "Invalid token!", "error_human": "Invalid token!"}


def test_a_token_without_agent_permission_stops_the_connector(fake, url):
    fake.load(STORIES[:1])
    fake.fail("/ticket_history/", 403)  # B5: a customer's token may not read history
    with pytest.raises(FatalError, match="HTTP 403") as caught:
        Store().sync(connect(url))
    assert TOKEN not in str(caught.value)
    with pytest.raises(FatalError, match="token"):
        ZammadConnector("zm", {"url": url})


def test_the_token_is_sent_as_zammad_asks(fake, url):
    ids = fake.load(STORIES[:1])
    fake.credentials = {f"Token token={TOKEN}"}  # the fake takes this form only
    store = Store()
    connector = connect(url + "/api/v1/")  # the API's base given: the site is meant
    store.sync(connector)
    assert store.delivered == [str(ids["printer"])]
    assert connector.ticket_url("7") == f"{url}/#ticket/zoom/7"


# -- mappings ------------------------------------------------------------------------------


def test_default_mappings():
    values = ValueMap({}, {})
    states = ("new", "open", "pending reminder", "pending close", "closed", "merged", "removed")
    assert [values.status(s) for s in states] == [
        "new", "open", "pending", "pending", "closed", "closed", "closed"
    ]  # fmt: skip
    assert [values.removal(s) for s in states] == [None] * 5 + ["merged", "deleted"]
    assert [values.priority(p) for p in ("1 low", "2 normal", "3 high", None)] == [
        "low", "normal", "high", "normal"
    ]  # fmt: skip
    kinds = ("email", "phone", "web", "chat", "sms", "twitter status",
             "twitter direct-message", "facebook feed post", "facebook feed comment",
             "facebook direct-message", "telegram personal-message", "whatsapp message",
             "note", "fax", "")  # fmt: skip
    assert [values.channel(k) for k in kinds] == [
        "email", "phone", "web", "chat", *["social"] * 8, "other", "other", "other"
    ]  # fmt: skip
    assert values.notes() == []


def test_overrides_and_unknown_values_noted_once(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    fake.state("waiting for vendor", 4)  # a site's own state of type pending action
    fake.state("escalated", 9)  # a state type slamon does not know
    fake.priority("5 critical")
    fake.priority("P1")
    held = fake.create(minutes(0), customer, state="waiting for vendor", priority="3 high",
                       article_type="phone")  # fmt: skip
    odd = [fake.create(minutes(m), customer, state="escalated", priority="P1") for m in (1, 2)]
    fake.change(odd[0], minutes(5), agent, state="pending reminder", priority="5 critical")
    connector = connect(url, statuses={"waiting for vendor": "on_hold", "pending reminder":
                                       "on_hold"}, priorities={"3 high": "urgent"})  # fmt: skip
    store = Store()
    store.sync(connector)
    assert {k: store.fields[str(held)][k] for k in ("status", "priority", "channel")} == {
        "status": "on_hold", "priority": "urgent", "channel": "phone"
    }  # fmt: skip
    changes = [e for e in store.history(odd[0]) if isinstance(e, FieldChange)]
    assert [(c.field, c.new, c.old) for c in changes] == [
        ("status", "on_hold", "open"), ("priority", "normal", "normal")
    ]  # fmt: skip
    assert store.fields[str(odd[1])]["status"] == "open"
    fake.article(odd[1], minutes(9), agent, "Agent")
    store.sync(connector)  # the same unknown values again: no new notes
    assert sorted(store.notes) == [
        "zammad priority '5 critical' counted as normal; map it under `priorities:`",
        "zammad priority 'P1' counted as normal; map it under `priorities:`",
        "zammad state 'escalated' counted as open; map it under `statuses:`",
    ]


def test_authors_visibility_and_field_changes(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    support, tier2 = fake.group("Support"), fake.group("Support::2nd Level")
    tid = fake.create(minutes(0), customer, group=support, article_type="web")
    fake.article(tid, minutes(1), 1, "System")  # an auto-reply
    fake.article(tid, minutes(2), agent, "Agent", internal=True)
    fake.article(tid, minutes(3), agent, "Agent")
    fake.change(tid, minutes(3), agent, state="open")
    fake.change(tid, minutes(4), agent, group=tier2, priority="3 high")
    fake.article(tid, minutes(5), customer, "Customer", kind="web")
    store = Store()
    store.sync(connect(url))
    events = rules.in_order(store.history(tid))
    created = events[0]
    assert isinstance(created, Created) and created.by == "customer"
    assert created.fields == {"status": "new", "priority": "normal", "queue": "Support",
                              "channel": "web", "type": "", "tags": frozenset()}  # fmt: skip
    assert [(e.author, e.public) for e in events if isinstance(e, Message)] == [
        ("customer", True), ("system", True), ("agent", False), ("agent", True),
        ("customer", True),
    ]  # fmt: skip
    assert [(e.field, e.new, e.old) for e in events if isinstance(e, FieldChange)] == [
        ("status", "open", "new"),
        ("queue", "Support::2nd Level", "Support"),
        ("priority", "high", "normal"),
    ]
    # The reply and the state change of minute 3 keep the order the history logged.
    at3 = [type(e).__name__ for e in events if e.at == minutes(3)]
    assert at3 == ["Message", "FieldChange"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.id for e in events}) == len(events)
    assert store.fields[str(tid)]["queue"] == "Support::2nd Level"
    assert store.fields[str(tid)]["priority"] == "high"


def test_merges_and_removals_remove_the_ticket(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    merged, removed, vanished, kept = (fake.create(minutes(m), customer) for m in range(4))
    fake.merge(merged, kept, minutes(10), agent)
    fake.remove(removed, minutes(11), agent)
    fake.article(vanished, minutes(12), agent, "Agent")
    fake.fail(f"/by_ticket/{vanished}", 404)  # deleted between the search and this
    store = Store()
    store.sync(connect(url))
    assert shape(store.history(merged))[-1] == ("removed", minutes(10), "merged")
    assert shape(store.history(removed))[-1] == ("removed", minutes(11), "deleted")
    assert shape(store.history(vanished)) == [("removed", minutes(12), "deleted")]
    for tid in (merged, removed, vanished):
        assert store.fields[str(tid)]["status"] == "closed"  # not counted as open
    assert not any(isinstance(e, Removed) for e in store.history(kept))
    assert not any(isinstance(e, FieldChange) for e in store.history(merged))


# -- tags ----------------------------------------------------------------------------------


def tag_events(events: list[Event]) -> list[tuple[Any, ...]]:
    return [(e.at, e.new, e.old) for e in rules.in_order(events)
            if isinstance(e, FieldChange) and e.field == "tags"]  # fmt: skip


def test_tags_and_when_they_were_added_or_removed(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    tid = fake.create(minutes(0), customer)
    fake.tag(tid, minutes(0), customer, "billing")  # given with the ticket
    fake.tag(tid, minutes(30), agent, "vip")
    fake.untag(tid, minutes(45), agent, "billing")
    imported = fake.create(minutes(1), customer)
    fake.tags[imported] = ["legacy"]  # tags no history tells of (an import)
    plain = fake.create(minutes(2), customer)
    store = Store()
    store.sync(connect(url))
    assert store.fields[str(tid)]["tags"] == frozenset({"vip"})
    events = store.history(tid)
    created = rules.in_order(events)[0]
    assert isinstance(created, Created) and created.fields["tags"] == frozenset()
    assert tag_events(events) == [
        (minutes(0), frozenset({"billing"}), frozenset()),
        (minutes(30), frozenset({"billing", "vip"}), frozenset({"billing"})),
        (minutes(45), frozenset({"vip"}), frozenset({"billing", "vip"})),
    ]
    first = rules.in_order(store.history(imported))[0]
    assert isinstance(first, Created) and first.fields["tags"] == frozenset({"legacy"})
    assert tag_events(store.history(imported)) == []
    assert store.fields[str(plain)]["tags"] == frozenset()
    assert store.fields[str(tid)]["type"] == ""  # the doc names no ticket type
    asked = [path for _, path, _ in fake.log if path.startswith("/api/v1/tags")]
    assert f"/api/v1/tags?object=Ticket&o_id={tid}" in asked
    # A tag added later: the ticket is touched, the next sync brings that one change.
    fake.tag(tid, minutes(60), agent, "no-sla")
    store.sync(connect(url))  # Store checks every event id read again is the same event
    assert tag_events(store.history(tid))[-1] == (
        minutes(60), frozenset({"vip", "no-sla"}), frozenset({"vip"})
    )  # fmt: skip
    assert store.fields[str(tid)]["tags"] == frozenset({"vip", "no-sla"})


def test_tags_the_history_does_not_explain_change_at_the_last_update(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    tid = fake.create(minutes(0), customer)
    fake.tag(tid, minutes(10), agent, "prio")
    fake.tags[tid] = ["priority"]  # an admin renamed the tag: no history entry
    fake.article(tid, minutes(20), agent, "Agent")
    store = Store()
    store.sync(connect(url))
    assert tag_events(store.history(tid)) == [
        (minutes(10), frozenset({"prio", "priority"}), frozenset({"priority"})),
        (minutes(20), frozenset({"priority"}), frozenset({"prio", "priority"})),
    ]
    assert store.fields[str(tid)]["tags"] == frozenset({"priority"})


def test_a_tags_answer_without_a_list_is_retried(fake, url):
    customer = fake.user("Cy Customer")
    fake.create(minutes(0), customer)
    fake.fail("/api/v1/tags", "truncate")
    store = Store()
    with pytest.raises(RetriableError):
        store.sync(connect(url))
    assert store.cursor is None  # nothing stored past it
    store.sync(connect(url))
    assert store.delivered == ["1"]


NO_SLA = {
    "policies": [
        {"name": "standard", "match": {"tags_none": ["no-sla"]},
         "targets": {"first_response": "1h", "resolution": "1d"}},
    ],
}  # fmt: skip


def test_a_no_sla_tag_added_later_stops_the_policy(fake, url, tmp_path):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    tagged = fake.create(minutes(0), customer, title="Tagged later")
    fake.tag(tagged, minutes(30), agent, "no-sla")
    untagged = fake.create(minutes(1), customer, title="Never tagged")
    connector = connect(url, per_page=2)
    app = monitor_app(tmp_path, url, connector, NO_SLA)
    assert app.extensions["slamon"].scheduler.sync_once("zm")
    policies = rules.load_rules(NO_SLA)
    with app.app_context():
        stored, tags = {}, {}
        for tid in (tagged, untagged):
            ticket = db.session.scalars(select(Ticket).where(Ticket.source_id == str(tid))).one()
            stored[tid], tags[tid] = stored_clocks(ticket.id), ticket.tags
    assert tags == {tagged: ["no-sla"], untagged: []}
    # Both ran under the policy; the tag took the policy away 30 minutes in.
    assert {(row[0], row[2]) for row in stored[tagged]} == {
        ("first_response", "cancelled"), ("resolution", "cancelled")
    }  # fmt: skip
    assert {row[5] for row in stored[tagged]} == {minutes(30)}  # stopped at the tag
    assert {(row[0], row[2]) for row in stored[untagged]} == {
        ("first_response", "breached"), ("resolution", "breached")
    }  # fmt: skip
    # What the engine gives for the history the connector delivered.
    store = Store()
    store.sync(connect(url))
    for tid in (tagged, untagged):
        expected = rules.evaluate("zm", store.history(tid), policies, NOW)
        assert stored[tid] == sorted(
            (c.metric, c.cycle, c.state, c.started_at, c.deadline, c.stopped_at,
             c.elapsed_seconds, c.target_seconds) for c in expected.clocks
        )  # fmt: skip


# -- hard deletions ------------------------------------------------------------------------


def ticket_reads(fake: FakeZammad) -> list[str]:
    return [path.rstrip("?") for method, path, _ in fake.log
            if method == "GET" and path.startswith("/api/v1/tickets/")]  # fmt: skip


@pytest.mark.parametrize("fake", [5, 6], ids=["zammad5-assets", "zammad6-array"], indirect=True)
def test_a_destroyed_ticket_is_removed_on_the_next_sync(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "Agent")
    a, b, c, solved = (fake.create(minutes(m * 60), customer) for m in range(4))
    fake.change(solved, minutes(200), agent, state="closed")
    recent = fake.create(minutes(300), customer)  # in every later sync's overlap
    store = Store()
    store.sync(connect(url))
    assert store.cursor is not None and store.cursor["open"] == [a, b, c, recent]
    assert checks(fake) == []  # every open ticket was in this sync's search
    fake.destroy(b)
    batches = store.sync(connect(url))
    assert checks(fake) == [[str(a), str(b), str(c)]]  # one search for all not walked
    assert ticket_reads(fake) == [f"/api/v1/tickets/{b}"]  # only the one it did not find
    assert [ch.ticket for ch in batches[-1].changes] == [str(b)]
    assert shape(store.history(b))[-1] == ("removed", NOW, "deleted")
    assert store.fields[str(b)]["status"] == "closed"
    for kept in (a, c, solved, recent):
        assert not any(isinstance(e, Removed) for e in store.history(kept))
    assert store.cursor["open"] == [a, c, recent]
    again = store.sync(connect(url))
    assert [len(batch.changes) for batch in again] == [0]
    assert checks(fake)[-1] == [str(a), str(c)]
    assert len(ticket_reads(fake)) == 1


def test_a_404_that_is_not_zammads_is_no_deletion(fake, url):
    customer = fake.user("Cy Customer")
    a, b = fake.create(minutes(0), customer), fake.create(minutes(60), customer)
    store = Store()
    store.sync(connect(url))
    fake.destroy(a)
    late = fake.create(minutes(120), customer)
    fake.proxy_404 = True
    fake.fail(f"/api/v1/tickets/{a}", 404)  # a proxy's page, not Zammad's answer
    stored: list[Batch] = []
    with pytest.raises(RetriableError, match="404 without Zammad's error"):
        store.sync(connect(url), into=stored)
    assert [ch.ticket for batch in stored for ch in batch.changes] == [str(late)]  # kept
    assert not any(isinstance(e, Removed) for t in (a, b) for e in store.history(t))
    assert store.cursor is not None and a in store.cursor["open"]
    store.sync(connect(url))  # Zammad's own answer now
    assert shape(store.history(a))[-1] == ("removed", NOW, "deleted")
    assert not any(isinstance(e, Removed) for e in store.history(b))


def test_a_ticket_the_token_no_longer_sees_is_not_deleted(fake, url):
    customer = fake.user("Cy Customer")
    a, b = fake.create(minutes(0), customer), fake.create(minutes(60), customer)
    store = Store()
    store.sync(connect(url))
    fake.gone.add(a)  # out of the search ...
    fake.fail(f"/api/v1/tickets/{a}", 403)  # ... and not the token's to read
    batches = store.sync(connect(url))
    assert [len(batch.changes) for batch in batches] == [0]
    assert not any(isinstance(e, Removed) for e in store.history(a))
    assert store.cursor is not None and store.cursor["open"] == [b]
    assert any("no longer visible" in note for note in store.notes)


def test_the_open_tickets_kept_are_bounded_and_checked_in_turn(fake, url):
    customer = fake.user("Cy Customer")
    ids = [fake.create(minutes(m * 60), customer) for m in range(6)]
    store = Store()
    connector = connect(url, remember=4, check=2)
    store.sync(connector)
    assert store.cursor is not None and store.cursor["open"] == ids[2:]  # the newest four
    for _ in range(3):
        store.sync(connector)
    # The newest is in every sync's overlap; the other three are checked two at a time.
    assert checks(fake) == [[str(ids[2]), str(ids[3])], [str(ids[4]), str(ids[2])],
                            [str(ids[3]), str(ids[4])]]  # fmt: skip
    assert store.cursor["open"] == ids[2:]
    assert ticket_reads(fake) == []
    newcomer = fake.create(minutes(400), customer)
    store.sync(connector)
    assert store.cursor["open"] == [*ids[3:], newcomer]  # the oldest one let go


# -- webhooks ------------------------------------------------------------------------------


def test_webhook_signatures(url):
    signed = connect(url, webhook_secret=SECRET)
    assert signed.verify_webhook(SIGNED, BODY)
    assert signed.verify_webhook({"x-hub-signature": SIGNED["X-Hub-Signature"].upper()}, BODY)
    assert not signed.verify_webhook(SIGNED, BODY.replace(b"5", b"6"))
    assert not signed.verify_webhook({"X-Hub-Signature": "sha256=" + "0" * 64}, BODY)
    assert not signed.verify_webhook({"X-Hub-Signature": "fcc6f0f39ca469a2"}, BODY)
    assert not signed.verify_webhook({}, BODY)
    assert not connect(url, webhook_secret="another").verify_webhook(SIGNED, BODY)
    assert not connect(url).verify_webhook(SIGNED, BODY)  # no secret: nothing passes


# -- the scenario through the monitor --------------------------------------------------------


def monitor_app(tmp_path: Path, url: str, connector: ZammadConnector, policies: Any = None) -> Any:
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **(policies or scenario.RULES),
        "connectors": [{"name": "zm", "type": "zammad", "url": url, "token": TOKEN,
                        "webhook_secret": SECRET, "start": START.isoformat(), **SITE}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path, now=NOW)
    options = loaded.connectors[0].options()
    assert options["token"] == TOKEN and options["statuses"] == SITE["statuses"]
    app = create_app(loaded, clock=lambda: NOW, connectors={"zm": connector})
    upgrade(app)
    register_connectors(app)
    return app


def engine_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    expected = rules.evaluate("zm", events, RULES, NOW)
    return sorted(
        (c.metric, c.cycle, c.state, c.started_at, c.deadline, c.stopped_at,
         c.elapsed_seconds, c.target_seconds)
        for c in expected.clocks
    )  # fmt: skip


def tell_story(fake: FakeZammad, url: str, tmp_path: Path) -> tuple[Any, dict[str, int]]:
    """The scenario loaded into the served fake and synced once into a real monitor whose
    clock is ``NOW``. Returns the app and each story's ticket id."""
    ids = fake.load(STORIES)
    given = {"url": url, "token": TOKEN, "start": START, "webhook_secret": SECRET, **SITE}
    connector = ZammadConnector("zm", given, clock=lambda: NOW, per_page=2)
    app = monitor_app(tmp_path, url, connector)
    assert app.extensions["slamon"].scheduler.sync_once("zm")
    return app, ids


@pytest.mark.parametrize("fake", [5, 6], ids=["zammad5-assets", "zammad6-array"], indirect=True)
def test_the_scenario_gives_the_engines_clocks(fake, url, tmp_path):
    app, ids = tell_story(fake, url, tmp_path)
    with app.app_context():
        for story in STORIES:
            ticket = db.session.scalars(
                select(Ticket).where(Ticket.source_id == str(ids[story.key]))
            ).one()
            stored = stored_clocks(ticket.id)
            wanted = engine_rows(scenario.expected_events(story))
            assert stored == wanted, story.key
            assert stored, story.key
            assert ticket.status == story.status_at_end()
            # The one step left out (ratings) changes no clock.
            assert engine_rows(zammad_events(story)) == wanted
    # A webhook with a bad signature is refused and stores nothing; a good one is taken.
    client = app.test_client()
    with app.app_context():
        events = db.session.query(EventRow).count()
    bad = {"X-Hub-Signature": "sha1=" + "0" * 40}
    assert client.post("/api/v1/webhooks/zm", data=BODY, headers=bad).status_code == 401
    with app.app_context():
        assert db.session.query(EventRow).count() == events
    assert client.post("/api/v1/webhooks/zm", data=BODY, headers=SIGNED).status_code == 202


def test_a_webhook_re_reads_its_ticket_at_once(fake, url, tmp_path):
    ids = fake.load(STORIES)
    app = monitor_app(tmp_path, url, connect(url, per_page=2, webhook_secret=SECRET))
    agent = next(uid for uid, user in fake.users.items() if user["role_ids"] == [ROLES["Agent"]])
    tid = ids["refund"]
    body = json.dumps({"ticket": {"id": tid, "title": "Refund"}, "article": None}).encode()
    signed = {"X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), body, "sha1").hexdigest()}
    searches = []

    def answer() -> None:
        searches.append(sum(SEARCH in path for _, path, _ in fake.log))
        fake.article(tid, NOW - dt.timedelta(minutes=1), agent, "Agent")

    response, gained = webhook_refetch(
        app, "zm", str(tid), answer,
        lambda c: c.post("/api/v1/webhooks/zm", data=body, headers=signed),
    )  # fmt: skip
    assert response.status_code == 202 and response.json["tickets"] == [str(tid)]
    assert gained == ["message"]
    assert sum(SEARCH in path for _, path, _ in fake.log) == searches[0]  # no search was run
    assert connect(url).webhook_tickets(b'{"article": {"id": 3}}') == ()
