"""The Jira Service Management connector against a fake JSM Cloud on loopback
(tests/fakes/jira.py): the enhanced search page by page, resumed from a stored cursor with
an overlapping, minute-precise, user-time-zone window and de-duplication, through rate
limits, 5xx bursts, truncated pages and a revoked token; the default mappings and their
overrides; webhook signatures and deletions; and the shared scenario, synced into a real
monitor, giving the clocks the engine gives for the story itself.

What JSM cannot tell: its CSAT feedback carries no time, so a rating is stamped at the
resolution it rates (the story's ratings at 240 and 260 minutes arrive at 181 and 200).
Ratings start or stop no clock, so the clocks are the story's exactly."""

from __future__ import annotations

import dataclasses
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
from connectors.jira import JiraConnector
from connectors.jira_mapping import ValueMap
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import EventRow, Ticket, db
from rules.events import Created, Event, FieldChange, Message, Rating, Removed
from tests.connectors.harness import Store, engine_clocks, shape, stored_clocks, webhook_refetch
from tests.fakes import scenario
from tests.fakes.jira import FakeJira
from tests.fakes.scenario import STORIES, T0, Story, minutes
from tests.fakes.serve import FakeServer

EMAIL, TOKEN, PAT = "bot@acme.test", "ATATT3xFfGF0-jira-t0ken-9f8e7d", "jira-pat-1a2b3c4d5e"
NOW = T0 + dt.timedelta(days=2)
RULES = rules.load_rules(scenario.RULES)
SECRET = "It's a Secret to Everybody"  # the WebSub/GitHub sha256 example's key and body
VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
SEARCH = "/rest/api/3/search/jql"


@pytest.fixture
def fake(server: FakeServer) -> FakeJira:
    return server.serve(FakeJira(EMAIL, TOKEN, PAT))


@pytest.fixture
def url(server: FakeServer, fake: FakeJira) -> str:
    return server.url


def connect(url: str, per_page: int = 2, **options: Any) -> JiraConnector:
    lookback = options.pop("lookback", dt.timedelta(minutes=2))
    page_size = options.pop("page_size", 100)
    given = {"url": url, "email": EMAIL, "token": TOKEN, "projects": ["SD"],
             "start": T0 - dt.timedelta(days=1)}  # fmt: skip
    return JiraConnector("jr", {**given, **options}, clock=lambda: NOW, per_page=per_page,
                         page_size=page_size, lookback=lookback)  # fmt: skip


def as_told_by_jira(story: Story) -> list[Event]:
    """The story's history as JSM can tell it: a rating at the resolution it rates."""
    events, solved = [], None
    for event in scenario.expected_events(story):
        if isinstance(event, FieldChange) and event.field == "status":
            solved = event.at if event.new in ("solved", "closed") else solved
        if isinstance(event, Rating):
            assert solved is not None
            event = dataclasses.replace(event, at=solved)
        events.append(event)
    return events


def requests_to(fake: FakeJira, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(p).query) for p in fake.log if urlsplit(p).path == path]


def searches(fake: FakeJira) -> list[dict[str, list[str]]]:
    """The main searches (not the request-channel look-ups)."""
    return [q for q in requests_to(fake, SEARCH) if "request-channel-type" not in q["jql"][0]]


# -- the incremental sync ------------------------------------------------------------------


def test_registered_as_jira():
    assert connector_types()["jira"] is JiraConnector


def test_a_multi_page_sync_delivers_every_story_once(fake, url):
    ids = fake.load(STORIES)
    store = Store()
    batches = store.sync(connect(url, per_page=2))
    assert [len(b.changes) for b in batches] == [2, 2, 1]
    assert [b.done for b in batches] == [False, False, True]
    delivered = [c.ticket for b in batches for c in b.changes]
    assert sorted(delivered) == sorted(str(i) for i in ids.values())  # each once
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(as_told_by_jira(story)), story.key
    pages = searches(fake)
    # start - lookback, floored to the minute, in the API user's zone (Chicago, UTC-6)
    jql = 'project in ("SD") AND updated >= "2026-11-22 02:58" ORDER BY updated ASC, key ASC'
    assert [p["jql"] for p in pages] == [[jql]] * 3
    assert "nextPageToken" not in pages[0] and all("nextPageToken" in p for p in pages[1:])
    assert all(p["maxResults"] == ["2"] for p in pages)
    assert "customfield_10010" in pages[0]["fields"][0].split(",")
    assert not any(urlsplit(p).path.endswith("/search") for p in fake.log)  # never the old one
    invoice = store.fields[str(ids["invoice"])]
    assert invoice["queue"] == "Billing" and invoice["priority"] == "urgent"
    assert invoice["url"] == f"{url}/browse/{fake.issues[ids['invoice']]['key']}"
    assert invoice["requester"] == "invoice@x.test"
    assert invoice["subject"] == "Invoice address wrong"
    assert store.fields[str(ids["login"])]["channel"] == "web"  # a portal request
    # The lag metric's "newest change": the page's latest update, then (caught up) now.
    assert [b.newest for b in batches] == [minutes(240), minutes(301), NOW]
    assert batches[-1].cursor["since"] == minutes(400).isoformat()


def test_the_old_search_is_gone(fake, url):
    for version in (2, 3):
        answer = requests.get(f"{url}/rest/api/{version}/search", auth=(EMAIL, TOKEN))
        assert answer.status_code == 410
        assert answer.json()["errorMessages"][0].startswith("The requested API has been removed")
    unbounded = requests.get(f"{url}{SEARCH}", params={"jql": "order by key desc"},
                             auth=(EMAIL, TOKEN))  # fmt: skip
    assert unbounded.status_code == 400 and "Unbounded" in unbounded.json()["errorMessages"][0]


def test_comments_and_changelog_are_read_page_by_page(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "atlassian")
    iid = fake.create(minutes(0), customer)
    for n in range(1, 250):  # 249 comments and 120 changes: pages of 100
        fake.comment(iid, minutes(n), agent if n % 2 else customer)
        if n <= 120:
            fake.change(iid, minutes(n), agent, labels=f"l{n}")
    store = Store()
    store.sync(connect(url))
    assert len(requests_to(fake, f"/rest/api/3/issue/{iid}/comment")) == 3
    assert len(requests_to(fake, f"/rest/api/3/issue/{iid}/changelog")) == 2
    messages = [e for e in store.history(iid) if isinstance(e, Message)]
    assert len(messages) == 250 and [m.at for m in messages] == sorted(m.at for m in messages)
    assert len([e for e in store.history(iid) if isinstance(e, FieldChange)]) == 120


def test_a_resumed_sync_brings_only_what_changed(fake, url):
    ids = fake.load(STORIES)
    store = Store()
    store.sync(connect(url))
    before = {t: set(events) for t, events in store.events.items()}
    agent = next(u for u, user in fake.users.items() if user["displayName"] == "Ann Agent")
    fresh = fake.create(minutes(500), fake.user("Nia Newcomer"), summary="New one")
    fake.comment(ids["refund"], minutes(510), agent)
    fake.change(ids["refund"], minutes(510), agent, status="Waiting for customer")
    fake.log.clear()

    restarted = Store()
    restarted.cursor, restarted.events = store.cursor, store.events  # a new process
    batches = restarted.sync(connect(url))
    assert sorted(c.ticket for b in batches for c in b.changes) == sorted(
        [str(fresh), str(ids["refund"])]
    )
    # The window reached back over login (updated at 400), which came again unchanged and
    # was skipped without reading its history.
    assert 'updated >= "2026-11-23 09:38"' in searches(fake)[0]["jql"][0]  # 400 - 2, Chicago
    assert not any(f"/issue/{ids['login']}/" in p for p in fake.log)
    refund = str(ids["refund"])
    added = set(restarted.events[refund]) - before[refund]
    assert {type(restarted.events[refund][e]) for e in added} == {Message, FieldChange}
    assert len(added) == 2
    assert shape(restarted.history(fresh))[0][:3] == ("created", minutes(500), "customer")
    again = restarted.sync(connect(url))  # nothing new: one empty, final batch
    assert [(len(b.changes), b.done) for b in again] == [(0, True)]
    assert again[0].cursor == batches[-1].cursor


def test_the_overlap_within_a_minute_is_deduplicated(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "atlassian")
    first = fake.create(minutes(10.5), customer)  # 10:30 past the minute
    second = fake.create(minutes(9), customer)
    store = Store()
    store.sync(connect(url, lookback=dt.timedelta(0)))
    assert store.cursor is not None and store.cursor["since"] == minutes(10.5).isoformat()
    fake.comment(second, minutes(10.75), agent)  # later, but within the same minute
    fake.log.clear()
    batches = store.sync(connect(url, lookback=dt.timedelta(0)))
    # Jira sees whole minutes: the query reaches back to 03:10 (Chicago), finds both ...
    assert searches(fake)[0]["jql"][0].startswith('project in ("SD") AND updated >= '
                                                  '"2026-11-23 03:10"')  # fmt: skip
    # ... and only the changed one is delivered again.
    assert [c.ticket for b in batches for c in b.changes] == [str(second)]
    assert not any(f"/issue/{first}/" in p for p in fake.log)
    assert len([e for e in store.history(second) if isinstance(e, Message)]) == 2


def test_a_repeated_token_ends_the_sync(fake, url):
    fake.load(STORIES[:3])
    fake.stuck = True  # isLast never comes; an empty last page repeats its token
    store = Store()
    batches = store.sync(connect(url))
    assert batches[-1].done
    assert any("repeated its nextPageToken" in note for note in store.notes)
    assert len(searches(fake)) == 3


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_a_rate_limited_sync_waits_as_told(fake, url, status):
    ids = fake.load(STORIES)
    fake.limit(every=5, retry_after=1, status=status)
    store = Store()
    store.sync(connect(url, per_page=5))
    assert fake.windows >= 1  # the budget ran out at least once ...
    assert fake.early == 0  # ... and nothing came before Retry-After elapsed
    assert fake.limited == fake.windows
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(as_told_by_jira(story))


def test_a_5xx_burst_is_ridden_out(fake, url):
    ids = fake.load(STORIES)
    fake.fail("/comment", 500, 502, 503)
    store = Store()
    assert store.sync(connect(url))[-1].done
    assert fake.faults == [("/comment", [])]
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(as_told_by_jira(story))


@pytest.mark.parametrize("where", ["search", "changelog", "comment"])
def test_a_truncated_page_keeps_the_cursor_before_it(fake, url, where):
    ids = fake.load(STORIES)
    # The search's order: refund, printer | invoice, renewal | login (by last update).
    path = {"search": "nextPageToken=", "changelog": f"/issue/{ids['invoice']}/changelog",
            "comment": f"/issue/{ids['invoice']}/comment"}[where]  # fmt: skip
    fake.fail(path, "truncate")
    store = Store()
    stored: list[Batch] = []
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(url), into=stored)
    assert len(stored) == 1 and store.cursor == stored[0].cursor  # page one, no further
    assert store.cursor is not None and store.cursor["since"] == minutes(240).isoformat()
    assert set(store.events) == {str(ids["refund"]), str(ids["printer"])}
    store.sync(connect(url))  # the next poll reads the page again, and the rest
    for story in STORIES:
        assert shape(store.history(ids[story.key])) == shape(as_told_by_jira(story))


def test_a_revoked_token_stops_the_connector_without_the_token(fake, url):
    fake.load(STORIES[:1])
    Store().sync(connect(url))
    fake.revoke()
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(url))
    assert "HTTP 401" in str(caught.value) and TOKEN not in str(caught.value)
    answer = requests.get(f"{url}{SEARCH}", auth=(EMAIL, TOKEN))
    assert answer.status_code == 401 and answer.json()["errors"] == {}


def test_a_pat_is_sent_as_bearer(fake, url):
    ids = fake.load(STORIES[:1])
    store = Store()
    store.sync(connect(url, email=None, token=None, pat=PAT))
    assert str(ids["printer"]) in store.events
    with pytest.raises(FatalError, match="pat"):
        JiraConnector("jr", {"url": url, "email": EMAIL, "projects": ["SD"]})


def test_absence_from_search_is_not_deletion_the_webhook_is(fake, url):
    customer = fake.user("Cy Customer")
    gone, kept = fake.create(minutes(0), customer), fake.create(minutes(1), customer)
    connector = connect(url, webhook_secret=SECRET)
    store = Store()
    store.sync(connector)
    payload = fake.delete(gone, minutes(30))
    store.sync(connector)
    assert not any(isinstance(e, Removed) for e in store.history(gone))  # just not found
    body = json.dumps(payload).encode()
    assert connector.verify_webhook({"X-Hub-Signature": sign(body)}, body)
    assert connector.verify_webhook({"X-Hub-Signature": sign(body)}, body)  # a retry
    batches = store.sync(connector)
    assert [c.ticket for c in batches[0].changes] == [str(gone)]
    assert shape(store.history(gone))[-1] == ("removed", minutes(30), "deleted")
    assert store.fields[str(gone)]["status"] == "closed"
    assert not any(isinstance(e, Removed) for e in store.history(kept))
    assert not store.sync(connector)[0].changes  # handed on once


# -- mappings ------------------------------------------------------------------------------


def test_default_mappings():
    values = ValueMap({}, {})
    names = ("Waiting for customer", "Pending", "Resolved", "Closed", "Canceled")
    assert [values.status(n, "indeterminate") for n in names] == [
        "pending", "on_hold", "solved", "closed", "closed"
    ]  # fmt: skip
    assert [values.status("Anything", c) for c in ("new", "indeterminate", "done")] == [
        "new", "open", "solved"
    ]  # fmt: skip
    priorities = ("Lowest", "Low", "Medium", "High", "Highest", None)
    assert [values.priority(p) for p in priorities] == [
        "low", "low", "normal", "high", "urgent", "normal"
    ]  # fmt: skip
    assert [values.channel(c) for c in ("email", "portal", "api", "jira", None)] == [
        "email", "web", "api", "other", "web"
    ]  # fmt: skip
    assert values.notes() == []


def test_overrides_and_unknown_values_noted_once(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "atlassian")
    fake.status("Triage", "undefined")
    held = fake.create(minutes(0), customer, priority="Highest", channel="email",
                       status="Escalated")  # fmt: skip
    odd = [fake.create(minutes(m), customer, priority=None, status="Triage") for m in (1, 2)]
    fake.change(odd[0], minutes(5), agent, status="Waiting for customer")
    fake.priorities["P1"] = "9"  # a priority this site added
    fake.change(odd[1], minutes(6), agent, priority="P1")
    connector = connect(url, statuses={"escalated": "on_hold", "Waiting for customer":
                                       "on_hold"}, priorities={"Highest": "high"})  # fmt: skip
    store = Store()
    store.sync(connector)
    assert {k: store.fields[str(held)][k] for k in ("status", "priority", "channel")} == {
        "status": "on_hold", "priority": "high", "channel": "email"
    }  # fmt: skip
    changes = [e for e in store.history(odd[0]) if isinstance(e, FieldChange)]
    assert [(c.field, c.new, c.old) for c in changes] == [("status", "on_hold", "open")]
    assert store.fields[str(odd[0])]["priority"] == "normal"  # none set
    assert store.fields[str(odd[1])]["status"] == "open"
    fake.comment(odd[1], minutes(9), agent)
    store.sync(connector)  # the same unknown values again: no new notes
    assert sorted(store.notes) == [
        "jira priority 'P1' counted as normal; map it under `priorities:`",
        "jira status 'Triage' counted as open; map it under `statuses:`",
    ]


def test_authors_visibility_and_field_changes(fake, url):
    portal = fake.user("Pat Portal")  # a portal-only customer
    reporter = fake.user("Rita Reporter", "atlassian")  # a customer with an Atlassian account
    colleague = fake.user("Carl Colleague", "atlassian")  # a request participant
    agent, bot = fake.user("Al Agent", "atlassian"), fake.user("Automation for Jira", "app")
    iid = fake.create(minutes(0), reporter, labels=["vip"], request_type="Get IT help",
                      participants=[colleague], channel="api")  # fmt: skip
    fake.comment(iid, minutes(1), bot)  # an automation's auto-reply
    fake.comment(iid, minutes(2), agent, public=False)  # internal
    fake.comment(iid, minutes(3), agent)
    fake.change(iid, minutes(3), agent, status="Waiting for customer")
    fake.comment(iid, minutes(4), colleague)
    fake.comment(iid, minutes(5), portal)
    fake.change(iid, minutes(6), agent, labels="vip x", issuetype="Incident", priority="High",
                status="In Progress")  # fmt: skip
    store = Store()
    store.sync(connect(url))
    events = rules.in_order(store.history(iid))
    created = events[0]
    assert isinstance(created, Created) and created.by == "customer"
    assert created.fields == {"status": "new", "priority": "normal", "queue": "Get IT help",
                              "channel": "api", "type": "Service Request",
                              "tags": frozenset({"vip"})}  # fmt: skip
    assert [(e.author, e.public) for e in events if isinstance(e, Message)] == [
        ("customer", True), ("system", True), ("agent", False), ("agent", True),
        ("customer", True), ("customer", True),
    ]  # fmt: skip
    assert [(e.field, e.new, e.old) for e in events if isinstance(e, FieldChange)] == [
        ("status", "pending", "new"),
        ("tags", frozenset({"vip", "x"}), frozenset({"vip"})),
        ("type", "Incident", "Service Request"),
        ("priority", "high", "normal"),
        ("status", "open", "pending"),
    ]
    assert [(e.at, e.seq) for e in events] == sorted((e.at, e.seq) for e in events)
    assert len({e.id for e in events}) == len(events)
    assert store.fields[str(iid)]["tags"] == frozenset({"vip", "x"})
    assert store.fields[str(iid)]["type"] == "Incident"


def test_ratings_count_their_latest_answer(fake, url):
    customer, agent = fake.user("Cy Customer"), fake.user("Al Agent", "atlassian")
    unrated, rated = fake.create(minutes(0), customer), fake.create(minutes(1), customer)
    for iid in (unrated, rated):
        fake.change(iid, minutes(5), agent, status="Resolved")
    fake.rate(rated, minutes(6), 2)
    store = Store()
    store.sync(connect(url))
    fake.change(rated, minutes(30), agent, status="In Progress")  # reopened, solved again
    fake.change(rated, minutes(40), agent, status="Resolved")
    fake.rate(rated, minutes(60), 5)
    store.sync(connect(url))
    assert not any(isinstance(e, Rating) for e in store.history(unrated))
    answers = [
        (e.at, e.score) for e in rules.in_order(store.history(rated)) if isinstance(e, Rating)
    ]
    assert answers == [(minutes(5), 2), (minutes(40), 5)]
    assert rules.evaluate("jr", store.history(rated), RULES, NOW).ratings == {"csat": 5}
    feedback = [p for p in fake.log if "/feedback" in p]
    assert len(feedback) == 3  # asked only of resolved requests


# -- webhooks ------------------------------------------------------------------------------


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_signatures(url):
    signed = connect(url, webhook_secret=SECRET)
    body = b"Hello, World!"
    assert signed.verify_webhook({"X-Hub-Signature": VECTOR}, body)
    assert signed.verify_webhook({"x-hub-signature": VECTOR.upper().replace("SHA", "sha")}, body)
    assert not signed.verify_webhook({"X-Hub-Signature": VECTOR}, body + b" ")
    assert not signed.verify_webhook({"X-Hub-Signature": VECTOR.removeprefix("sha256=")}, body)
    assert not signed.verify_webhook({"X-Hub-Signature": "sha1=" + VECTOR[7:]}, body)
    assert not signed.verify_webhook({"X-Hub-Signature-256": VECTOR}, body)  # not its name
    assert not signed.verify_webhook({"X-Hub-Signature": "sha256=ü"}, body)
    assert not signed.verify_webhook({}, body)
    assert not connect(url, webhook_secret="another").verify_webhook(
        {"X-Hub-Signature": VECTOR}, body
    )
    assert not connect(url).verify_webhook({"X-Hub-Signature": VECTOR}, body)  # no secret


# -- the scenario through the monitor --------------------------------------------------------


def monitor_app(tmp_path: Path, url: str, connector: JiraConnector) -> Any:
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "jr", "type": "jira", "url": url, "email": EMAIL,
                        "token": TOKEN, "projects": ["SD"], "webhook_secret": SECRET,
                        "start": (T0 - dt.timedelta(days=1)).isoformat()}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(load_config(path, now=NOW), clock=lambda: NOW, connectors={"jr": connector})
    upgrade(app)
    register_connectors(app)
    return app


def test_the_config_builds_the_connector(tmp_path, url):
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "jr", "type": "jira", "url": url, "pat": PAT,
                        "projects": ["SD", "IT"], "jql": "labels = vip",
                        "statuses": {"Escalated": "on_hold"}}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    spec = load_config(path, now=NOW).connectors[0]
    connector = connector_types()["jira"](spec.name, spec.options())
    assert isinstance(connector, JiraConnector)
    assert connector.projects == ["SD", "IT"] and connector.jql == "labels = vip"
    assert connector.mapping.status("Escalated", "indeterminate") == "on_hold"


def tell_story(fake: FakeJira, url: str, tmp_path: Path) -> tuple[Any, dict[str, int]]:
    """The scenario loaded into the served fake and synced once into a real monitor whose
    clock is ``NOW``. Returns the app and each story's issue id."""
    ids = fake.load(STORIES)
    app = monitor_app(tmp_path, url, connect(url, per_page=2, webhook_secret=SECRET))
    assert app.extensions["slamon"].scheduler.sync_once("jr")
    return app, ids


def test_the_scenario_gives_the_engines_clocks(fake, url, tmp_path):
    app, ids = tell_story(fake, url, tmp_path)
    with app.app_context():
        for story in STORIES:
            ticket = db.session.scalars(
                select(Ticket).where(Ticket.source_id == str(ids[story.key]))
            ).one()
            stored = stored_clocks(ticket.id)
            expected = rules.evaluate("jr", scenario.expected_events(story), RULES, NOW)
            wanted = engine_clocks(expected)
            assert stored == wanted, story.key
            assert stored, story.key
            assert ticket.status == story.status_at_end()
            assert ticket.url == f"{url}/browse/{fake.issues[ids[story.key]]['key']}"
    # A webhook with a bad signature is refused and stores nothing; a good one is taken,
    # and the deletion it tells of is stored by the sync it sets off.
    client = app.test_client()
    with app.app_context():
        events = db.session.query(EventRow).count()
    body = json.dumps(fake.delete(ids["refund"], minutes(600))).encode()
    bad = client.post("/api/v1/webhooks/jr", data=body, headers={
        "X-Hub-Signature": sign(body, "wrong")})  # fmt: skip
    assert bad.status_code == 401
    assert app.extensions["slamon"].scheduler.sync_once("jr")
    with app.app_context():
        assert db.session.query(EventRow).count() == events
    good = client.post("/api/v1/webhooks/jr", data=body, headers={"X-Hub-Signature": sign(body)})
    assert good.status_code == 202
    assert app.extensions["slamon"].scheduler.sync_once("jr")
    with app.app_context():
        assert db.session.query(EventRow).count() == events + 1
        removed = db.session.scalars(select(EventRow).where(EventRow.kind == "removed")).one()
        assert removed.at == minutes(600).timestamp()


def test_a_webhook_re_reads_its_issue_at_once(fake, url, tmp_path):
    ids = fake.load(STORIES)
    app = monitor_app(tmp_path, url, connect(url, per_page=2, webhook_secret=SECRET))
    agent = next(aid for aid, user in fake.users.items() if user["accountType"] == "atlassian")
    iid = ids["refund"]
    body = json.dumps(
        {
            "timestamp": 1,
            "webhookEvent": "comment_created",
            "issue": {"id": str(iid), "key": fake.issues[iid]["key"]},
        }
    ).encode()
    searches = []

    def answer() -> None:
        searches.append(sum("search/jql" in line for line in fake.log))
        fake.comment(iid, NOW - dt.timedelta(minutes=1), agent)

    response, gained = webhook_refetch(
        app, "jr", str(iid), answer,
        lambda c: c.post("/api/v1/webhooks/jr", data=body, headers={"X-Hub-Signature": sign(body)}),
    )  # fmt: skip
    assert response.status_code == 202 and response.json["tickets"] == [str(iid)]
    assert gained == ["message"]
    asked = [line for line in fake.log if "search/jql" in line][searches[0] :]
    assert len(asked) == 1 and "id+in" in asked[0]  # one search, for that issue alone
    connector = connect(url)
    assert connector.webhook_tickets(json.dumps(fake.delete(iid, NOW)).encode()) == ()
    assert connector.webhook_tickets(b"[]") == connector.webhook_tickets(b"{") == ()


def test_a_query_jira_refuses_stops_the_connector(fake, url):
    """A jql option Jira cannot parse is a config problem: retrying each poll won't fix it."""
    fake.load(STORIES)
    with pytest.raises(FatalError, match=r"(?s)HTTP 400 .*check the connector's jql option"):
        Store().sync(connect(url, jql="labels = = broken"))
