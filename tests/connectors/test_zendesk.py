"""The Zendesk connector against a fake Zendesk on loopback (tests/fakes/zendesk.py): the
incremental export page by page, resumed from a stored cursor, through rate limits, 5xx
bursts, truncated pages and a revoked token; the default mappings and their overrides;
webhook signatures; and the shared scenario, synced into a real monitor, giving the clocks
the engine gives for the story itself."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml
from sqlalchemy import select

import rules
from connectors import Batch, FatalError, RetriableError, connector_types
from connectors.zendesk import ZendeskConnector
from connectors.zendesk_mapping import CHANNELS, ValueMap
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import EventRow, Ticket, db
from rules.events import Created, FieldChange, Message, Rating, Removed
from tests.connectors.harness import Store, engine_clocks, shape, stored_clocks, webhook_refetch
from tests.fakes import scenario
from tests.fakes.scenario import STORIES, T0, minutes
from tests.fakes.serve import FakeServer
from tests.fakes.zendesk import FakeZendesk

EMAIL, TOKEN, OAUTH = "bot@acme.test", "zd-t0ken-9f8e7d6c5b4a", "zd-oauth-1a2b3c4d5e"
NOW = T0 + dt.timedelta(days=2)  # what both the connector and the fake believe it is
RULES = rules.load_rules(scenario.RULES)
DOC_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="  # HELPDESK-APIS.md, Zendesk §10
DOC_VECTOR = {
    "X-Zendesk-Webhook-Signature": "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM=",
    "X-Zendesk-Webhook-Signature-Timestamp": "2021-03-25T05:09:27Z",
}
DOC_BODY = b'{"event":"ticket.updated","id":123}'
EXPORT = "/api/v2/incremental/tickets/cursor"


@pytest.fixture
def fake(server: FakeServer) -> FakeZendesk:
    return server.serve(FakeZendesk(EMAIL, TOKEN, OAUTH, clock=NOW.timestamp))


@pytest.fixture
def url(server: FakeServer, fake: FakeZendesk) -> str:
    return server.url


def connect(url: str, per_page: int = 2, **options: Any) -> ZendeskConnector:
    given = {"url": url, "email": EMAIL, "token": TOKEN, "start": T0 - dt.timedelta(days=1)}
    return ZendeskConnector("zd", {**given, **options}, clock=lambda: NOW, per_page=per_page)


def requests_to(fake: FakeZendesk, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(p).query) for p in fake.log if urlsplit(p).path == path]


# -- the incremental sync ------------------------------------------------------------------


def test_registered_as_zendesk():
    assert connector_types()["zendesk"] is ZendeskConnector


def test_a_multi_page_sync_delivers_every_story_once(fake, url):
    ids = fake.load(STORIES)
    store = Store()
    batches = store.sync(connect(url, per_page=2))
    assert [len(b.changes) for b in batches] == [2, 2, 1]
    assert [b.done for b in batches] == [False, False, True]
    assert len({b.cursor["after_cursor"] for b in batches}) == 3  # the cursor moves each page
    delivered = [c.ticket for b in batches for c in b.changes]
    assert sorted(delivered) == sorted(str(i) for i in ids.values())  # each once
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(scenario.expected_events(story))
    pages = requests_to(fake, EXPORT)
    assert pages[0]["start_time"] == [str(int((T0 - dt.timedelta(days=1)).timestamp()))]
    assert [p["cursor"][0] for p in pages[1:]] == [b.cursor["after_cursor"] for b in batches[:2]]
    assert all(p["per_page"] == ["2"] for p in pages)
    invoice = store.fields[str(ids["invoice"])]
    assert invoice["queue"] == "Billing" and invoice["priority"] == "urgent"
    assert invoice["url"] == f"{url}/agent/tickets/{ids['invoice']}"
    assert (
        invoice["requester"] == "invoice@x.test" and invoice["subject"] == "Invoice address wrong"
    )
    # The lag metric's "newest change": the page's latest update, then (caught up) now.
    assert [b.newest for b in batches] == [minutes(240), minutes(301), NOW]


def test_the_first_sync_starts_at_least_a_minute_back(fake, url):
    fake.load(STORIES[:1])
    store = Store()
    assert store.sync(connect(url, start=NOW + dt.timedelta(hours=1)))[-1].done
    assert requests_to(fake, EXPORT)[0]["start_time"] == [str(int(NOW.timestamp()) - 60)]


def test_audits_are_read_page_by_page(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "agent")
    tid = fake.create(minutes(0), customer)
    for n in range(1, 250):  # 250 audits: pages of 100, 100, 50
        fake.reply(tid, minutes(n), agent if n % 2 else customer)
    store = Store()
    store.sync(connect(url))
    assert len(requests_to(fake, f"/api/v2/tickets/{tid}/audits")) == 3
    messages = [e for e in store.history(tid) if isinstance(e, Message)]
    assert len(messages) == 250 and [m.at for m in messages] == sorted(m.at for m in messages)


def test_a_resumed_sync_brings_only_what_changed(fake, url):
    ids = fake.load(STORIES)
    store = Store()
    store.sync(connect(url))
    before = {t: set(events) for t, events in store.events.items()}
    agent = next(u for u, user in fake.users.items() if user["role"] == "agent")
    newcomer = fake.user("Nia Newcomer")
    fresh = fake.create(minutes(500), newcomer, subject="New one")
    fake.reply(ids["refund"], minutes(510), agent, status="pending")

    restarted = Store()
    restarted.cursor, restarted.events = store.cursor, store.events  # a new process
    batches = restarted.sync(connect(url))
    assert sorted(c.ticket for b in batches for c in b.changes) == sorted(
        [str(fresh), str(ids["refund"])]
    )
    refund = str(ids["refund"])
    added = set(restarted.events[refund]) - before[refund]
    assert {type(restarted.events[refund][e]) for e in added} == {Message, FieldChange}
    assert len(added) == 2
    assert shape(restarted.history(fresh))[0][:3] == ("created", minutes(500), "customer")
    again = restarted.sync(connect(url))  # nothing new: one empty, final batch
    assert [(len(b.changes), b.done) for b in again] == [(0, True)]
    assert again[0].cursor == batches[-1].cursor


def test_a_repeated_cursor_ends_the_sync(fake, url):
    fake.load(STORIES[:3])
    fake.stuck = True  # end_of_stream never comes; an empty page repeats its cursor
    store = Store()
    batches = store.sync(connect(url))
    assert batches[-1].done and not batches[-1].changes
    assert any("repeated its cursor" in note for note in store.notes)
    assert len(requests_to(fake, EXPORT)) == 3


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("budget_headers", [False, True], ids=["429", "ratelimit-headers"])
def test_a_rate_limited_sync_waits_as_told(fake, url, budget_headers):
    ids = fake.load(STORIES)
    fake.limit(every=5, retry_after=1, budget_headers=budget_headers)
    store = Store()
    store.sync(connect(url, per_page=5))
    assert fake.windows >= 1  # the budget ran out at least once ...
    assert fake.early == 0  # ... and nothing came before the wait was over
    assert fake.limited == (0 if budget_headers else fake.windows)
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(scenario.expected_events(story))


def test_a_5xx_burst_is_ridden_out(fake, url):
    ids = fake.load(STORIES)
    fake.fail("/audits", 500, 502, 503)
    store = Store()
    assert store.sync(connect(url))[-1].done
    assert fake.faults == [("/audits", [])]
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(scenario.expected_events(story))


@pytest.mark.parametrize("where", ["export", "audits"])
def test_a_truncated_page_keeps_the_cursor_before_it(fake, url, where):
    ids = fake.load(STORIES)
    # The export's order: refund, printer | invoice, renewal | login (by last update).
    fake.fail("cursor=" if where == "export" else f"/tickets/{ids['invoice']}/audits", "truncate")
    store = Store()
    stored: list[Batch] = []
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(url), into=stored)
    assert len(stored) == 1 and store.cursor == stored[0].cursor  # page one, no further
    assert set(store.events) == {str(ids["refund"]), str(ids["printer"])}
    store.sync(connect(url))  # the next poll reads the page again, and the rest
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(scenario.expected_events(story))


def test_a_revoked_token_stops_the_connector_without_the_token(fake, url):
    fake.load(STORIES[:1])
    Store().sync(connect(url))
    fake.revoke()
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(url))
    assert "HTTP 401" in str(caught.value) and TOKEN not in str(caught.value)
    answer = requests.get(f"{url}{EXPORT}?start_time=0", auth=(f"{EMAIL}/token", TOKEN))
    assert answer.status_code == 401 and answer.json() == {"error": "Couldn't authenticate you"}


def test_an_oauth_token_is_sent_as_bearer(fake, url):
    ids = fake.load(STORIES[:1])
    store = Store()
    store.sync(connect(url, email=None, token=None, oauth_token=OAUTH))
    assert str(ids["printer"]) in store.events
    with pytest.raises(FatalError, match="oauth_token"):
        ZendeskConnector("zd", {"url": url, "email": EMAIL})


# -- mappings ------------------------------------------------------------------------------


def test_default_mappings():
    values = ValueMap({}, {})
    assert [values.status(s) for s in ("new", "open", "pending", "hold", "solved", "closed")] == [
        "new", "open", "pending", "on_hold", "solved", "closed"
    ]  # fmt: skip
    assert [values.priority(p) for p in ("low", "normal", "high", "urgent", None)] == [
        "low", "normal", "high", "urgent", "normal"
    ]  # fmt: skip
    channels = {c: values.channel({"channel": c}) for c in (*CHANNELS, "mobile", "rule")}
    assert channels == {
        "email": "email", "web": "web", "chat": "chat", "native_messaging": "chat",
        "voice": "phone", "api": "api", "twitter": "social", "facebook": "social",
        "any_channel": "social", "mobile": "other", "rule": "other",
    }  # fmt: skip
    assert values.notes() == []


def test_overrides_and_unknown_values_noted_once(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "agent")
    held = fake.create(minutes(0), customer, status="hold", priority="urgent", channel="voice")
    odd = [fake.create(minutes(m), customer, status="escalated", priority="p1") for m in (1, 2)]
    fake.update(odd[0], minutes(5), agent, [("status", "pending"), ("priority", "asap")])
    connector = connect(url, statuses={"pending": "on_hold"}, priorities={"urgent": "high"})
    store = Store()
    store.sync(connector)
    assert {k: store.fields[str(held)][k] for k in ("status", "priority", "channel")} == {
        "status": "on_hold", "priority": "high", "channel": "phone"
    }  # fmt: skip
    changes = [e for e in store.history(odd[0]) if isinstance(e, FieldChange)]
    assert [(c.field, c.new, c.old) for c in changes] == [
        ("status", "on_hold", "open"), ("priority", "normal", "normal")
    ]  # fmt: skip
    assert store.fields[str(odd[1])]["status"] == "open"
    fake.reply(odd[1], minutes(9), agent)
    store.sync(connector)  # the same unknown values again: no new notes
    assert sorted(store.notes) == [
        "zendesk priority 'asap' counted as normal; map it under `priorities:`",
        "zendesk priority 'p1' counted as normal; map it under `priorities:`",
        "zendesk status 'escalated' counted as open; map it under `statuses:`",
    ]


def test_authors_visibility_and_field_changes(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "agent")
    admin, support = fake.user("Ada Admin", "admin"), fake.group("Support")
    tier2 = fake.group("Tier 2")
    tid = fake.create(minutes(0), customer, group=support, kind="question", tags=["vip"])
    fake.by_trigger(tid, minutes(1), agent)  # an agent's name, a trigger's doing
    fake.reply(tid, minutes(2), agent, public=False)
    fake.reply(tid, minutes(3), admin, status="pending")
    fake.update(tid, minutes(4), agent, [("group_id", str(tier2)), ("tags", ["vip", "x"]),
                                         ("type", "incident")])  # fmt: skip
    store = Store()
    store.sync(connect(url))
    events = rules.in_order(store.history(tid))
    created = events[0]
    assert isinstance(created, Created) and created.by == "customer"
    assert created.fields == {"status": "new", "priority": "normal", "queue": "Support",
                              "channel": "email", "type": "question",
                              "tags": frozenset({"vip"})}  # fmt: skip
    assert [(e.author, e.public) for e in events if isinstance(e, Message)] == [
        ("customer", True), ("system", True), ("agent", False), ("agent", True)
    ]  # fmt: skip
    assert [(e.field, e.new, e.old) for e in events if isinstance(e, FieldChange)] == [
        ("status", "pending", "new"),
        ("queue", "Tier 2", "Support"),
        ("tags", frozenset({"vip", "x"}), frozenset({"vip"})),
        ("type", "incident", "question"),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.id for e in events}) == len(events)
    assert store.fields[str(tid)]["queue"] == "Tier 2"


def test_deletions_and_merges_remove_the_ticket(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "agent")
    deleted, merged, vanished, kept = (fake.create(minutes(m), customer) for m in range(4))
    fake.delete(deleted, minutes(10))
    fake.merge(merged, kept, minutes(11), agent)
    fake.reply(vanished, minutes(12), agent)
    fake.fail(f"/tickets/{vanished}/audits", 404)  # deleted between the export and this
    store = Store()
    store.sync(connect(url))
    assert not any(f"/tickets/{deleted}/audits" in p for p in fake.log)  # 404s anyway
    assert shape(store.history(deleted)) == [("removed", minutes(10), "deleted")]
    assert store.fields[str(deleted)]["status"] == "closed"  # not counted as open
    assert shape(store.history(vanished)) == [("removed", minutes(12), "deleted")]
    ending = shape(store.history(merged))[-2:]
    assert ending == [("message", minutes(11), "system", True), ("removed", minutes(11), "merged")]
    assert not any(isinstance(e, Removed) for e in store.history(kept))


def test_ratings_count_their_latest_answer(fake, url):
    customer = fake.user("Cy Customer")
    offered, rated = fake.create(minutes(0), customer), fake.create(minutes(1), customer)
    fake.rate(offered, minutes(5), "offered")
    fake.rate(rated, minutes(6), "bad")
    store = Store()
    store.sync(connect(url))
    fake.rate(rated, minutes(60), "good")
    store.sync(connect(url))
    assert not any(isinstance(e, Rating) for e in store.history(offered))
    answers = [
        (e.at, e.score) for e in rules.in_order(store.history(rated)) if isinstance(e, Rating)
    ]
    assert answers == [(minutes(6), 1), (minutes(60), 5)]
    final = rules.evaluate("zd", store.history(rated), RULES, NOW)
    assert final.ratings == {"csat": 5}


# -- webhooks ------------------------------------------------------------------------------


def test_webhook_signatures(url):
    signed = connect(url, webhook_secret=DOC_SECRET)
    assert signed.verify_webhook(DOC_VECTOR, DOC_BODY)
    lower = {k.lower(): v for k, v in DOC_VECTOR.items()}
    assert signed.verify_webhook(lower, DOC_BODY)
    assert not signed.verify_webhook(DOC_VECTOR, DOC_BODY.replace(b"123", b"124"))
    stale = {**DOC_VECTOR, "X-Zendesk-Webhook-Signature-Timestamp": "2021-03-25T05:09:28Z"}
    assert not signed.verify_webhook(stale, DOC_BODY)
    assert not signed.verify_webhook({}, DOC_BODY)
    assert not connect(url, webhook_secret="another").verify_webhook(DOC_VECTOR, DOC_BODY)
    assert not connect(url).verify_webhook(DOC_VECTOR, DOC_BODY)  # no secret: nothing passes


# -- the scenario through the monitor --------------------------------------------------------


def monitor_app(tmp_path: Path, url: str, connector: ZendeskConnector) -> Any:
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "zd", "type": "zendesk", "url": url, "email": EMAIL,
                        "token": TOKEN, "webhook_secret": DOC_SECRET,
                        "start": (T0 - dt.timedelta(days=1)).isoformat()}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(load_config(path, now=NOW), clock=lambda: NOW, connectors={"zd": connector})
    upgrade(app)
    register_connectors(app)
    return app


def tell_story(fake: FakeZendesk, url: str, tmp_path: Path) -> tuple[Any, dict[str, int]]:
    """The scenario loaded into the served fake and synced once into a real monitor whose
    clock is ``NOW``. Returns the app and each story's ticket id."""
    ids = fake.load(STORIES)
    app = monitor_app(tmp_path, url, connect(url, per_page=2, webhook_secret=DOC_SECRET))
    assert app.extensions["slamon"].scheduler.sync_once("zd")
    return app, ids


def test_the_scenario_gives_the_engines_clocks(fake, url, tmp_path):
    app, ids = tell_story(fake, url, tmp_path)
    with app.app_context():
        for story in STORIES:
            ticket = db.session.scalars(
                select(Ticket).where(Ticket.source_id == str(ids[story.key]))
            ).one()
            stored = stored_clocks(ticket.id)
            expected = rules.evaluate("zd", scenario.expected_events(story), RULES, NOW)
            wanted = engine_clocks(expected)
            assert stored == wanted, story.key
            assert stored, story.key
            assert ticket.status == story.status_at_end()
    # A webhook with a bad signature is refused and stores nothing; a good one is taken.
    client = app.test_client()
    with app.app_context():
        events = db.session.query(EventRow).count()
    bad = client.post("/api/v1/webhooks/zd", data=DOC_BODY, headers={
        **DOC_VECTOR, "X-Zendesk-Webhook-Signature": "AAAA"})  # fmt: skip
    assert bad.status_code == 401
    assert client.post("/api/v1/webhooks/zd", data=DOC_BODY, headers=DOC_VECTOR).status_code == 202
    with app.app_context():
        assert db.session.query(EventRow).count() == events


def test_a_webhook_re_reads_its_ticket_at_once(fake, url, tmp_path):
    ids = fake.load(STORIES)
    app = monitor_app(tmp_path, url, connect(url, per_page=2, webhook_secret=DOC_SECRET))
    agent = next(uid for uid, user in fake.users.items() if user["role"] == "agent")
    tid = ids["refund"]
    body = json.dumps({"type": "zen:event-type:ticket.comment_added", "detail": {"id": str(tid)}})
    stamp = "2026-11-25T09:00:00Z"
    digest = hmac.new(DOC_SECRET.encode(), stamp.encode() + body.encode(), hashlib.sha256)
    headers = {"X-Zendesk-Webhook-Signature": base64.b64encode(digest.digest()).decode(),
               "X-Zendesk-Webhook-Signature-Timestamp": stamp}  # fmt: skip
    exports = []

    def answer() -> None:
        exports.append(sum(EXPORT in line for line in fake.log))
        fake.reply(tid, NOW - dt.timedelta(minutes=1), agent, status="pending")

    response, gained = webhook_refetch(
        app,
        "zd",
        str(tid),
        answer,
        lambda c: c.post("/api/v1/webhooks/zd", data=body, headers=headers),
    )
    assert response.status_code == 202 and response.json["tickets"] == [str(tid)]
    assert sorted(gained) == ["field", "message"]  # the reply and the status change
    assert sum(EXPORT in line for line in fake.log) == exports[0]  # no export was read
    with app.app_context():
        ticket = db.session.scalars(select(Ticket).where(Ticket.source_id == str(tid))).one()
        assert ticket.status == "pending"


def test_webhook_bodies_name_their_ticket(url):
    connector = connect(url)
    assert connector.webhook_tickets(DOC_BODY) == ("123",)
    assert connector.webhook_tickets(b'{"ticket": {"id": "77", "status": "open"}}') == ("77",)
    assert connector.webhook_tickets(b'{"ticket_id": 78}') == ("78",)
    for odd in (b"", b"not json", b"[1]", b'{"ticket": {"id": "x"}}', b'{"id": true}'):
        assert connector.webhook_tickets(odd) == ()
