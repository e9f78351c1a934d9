"""The Microsoft Graph mail connector against a fake Graph v1.0 on loopback
(tests/fakes/graph.py): per-folder message delta page by page, resumed from the stored
deltaLinks, through rate limits, 5xx bursts, truncated pages, revoked credentials and an
expired sync state; partial updates merged, the solved folder, replies and auto-replies;
and the shared scenario told as mail, synced into a real monitor, giving the clocks the
engine gives for the story as mail tells it.

Mail cannot tell all of the scenario: internal notes, priorities, ratings, channels other
than email and statuses other than solved are left out (``pending_on_reply``: an agent's
reply sets pending, a customer's sets open), and so are the team's auto-replies (Exchange
keeps automatic replies out of Sent Items); none of the last changes a clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from sqlalchemy import select

import rules
from connectors import Batch, FatalError, RetriableError, connector_types
from connectors.graph import SELECT, GraphConnector, token_url
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import Ticket, db
from rules.events import Created, FieldChange, Message
from tests.connectors.harness import Store, engine_clocks, stored_clocks
from tests.fakes import scenario
from tests.fakes.graph import AGENT, MAILBOX, FakeGraph
from tests.fakes.scenario import STORIES, T0, Step, Story, minutes
from tests.fakes.serve import FakeServer

TENANT, CLIENT_ID, CLIENT_SECRET = "acme-tenant-1", "graph-app-7c1d", "gr4ph~s3cret.9f8e7d"
NOW = T0 + dt.timedelta(days=2)
RULES = rules.load_rules(scenario.RULES)
DELTA = "/messages/delta"


@pytest.fixture
def fake(server: FakeServer) -> FakeGraph:
    return server.serve(FakeGraph(TENANT, CLIENT_ID, CLIENT_SECRET))


@pytest.fixture
def url(server: FakeServer, fake: FakeGraph) -> str:
    return server.url


def connect(url: str, clock: list[dt.datetime] | None = None, **options: Any) -> GraphConnector:
    given = {"url": url, "tenant_id": TENANT, "client_id": CLIENT_ID,
             "client_secret": CLIENT_SECRET, "mailbox": MAILBOX, "agents": ["@acme.test"],
             "start": T0 - dt.timedelta(days=1)}  # fmt: skip
    page = options.pop("page", 100)
    now = clock or [NOW]
    return GraphConnector("gr", {**given, **options}, clock=lambda: now[0], page=page)


def thread(fake: FakeGraph, start: float, replies: int = 1, customer: str = "cy@x.test") -> str:
    """A customer's message and alternating agent (sent) / customer (inbox) replies; the
    last inbox message's id."""
    last = inbox = fake.deliver(minutes(start), customer, MAILBOX, "Help")
    for n in range(1, replies + 1):
        if n % 2:
            last = fake.deliver(minutes(start + n), AGENT, customer, "RE: Help",
                                folder="sentitems", reply_to=last)  # fmt: skip
        else:
            last = inbox = fake.deliver(minutes(start + n), customer, MAILBOX, "RE: Help",
                                        reply_to=last)  # fmt: skip
    return inbox


def messages(store: Store) -> list[Message]:
    return [e for t in store.events for e in store.history(t) if isinstance(e, Message)]


def delta_requests(fake: FakeGraph) -> list[tuple[str, dict[str, list[str]]]]:
    out = []
    for line in fake.log:
        target = urlsplit(line.split(" ", 1)[1])
        if target.path.endswith(DELTA):
            out.append((target.path.split("/")[-3], parse_qs(target.query)))
    return out


# -- the sync ------------------------------------------------------------------------------


def test_registered_and_token_endpoint():
    assert connector_types()["graph"] is GraphConnector
    public = "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    assert token_url("https://graph.microsoft.com", "t1") == public
    assert token_url("http://127.0.0.1:9", "t1") == "http://127.0.0.1:9/t1/oauth2/v2.0/token"


def test_first_round_pages_both_folders_and_stores_delta_links(fake, url):
    for n in range(5):
        thread(fake, n * 10, replies=2, customer=f"c{n}@x.test")
    fake.deliver(T0 - dt.timedelta(days=3), "old@x.test", MAILBOX, "Before start")
    store = Store()
    batches = store.sync(connect(url, page=3))
    assert batches[-1].done and set(batches[-1].cursor["delta"]) == {"inbox", "sentitems"}
    assert all("$deltatoken=" in link for link in batches[-1].cursor["delta"].values())
    assert len(store.events) == 5 and len(messages(store)) == 15
    asked = delta_requests(fake)
    firsts = [q for _, q in asked if "$skiptoken" not in q]
    assert [q["$select"] for q in firsts] == [[SELECT]] * 2
    assert len([f for f, _ in asked if f == "inbox"]) == 4  # 11 messages, 3 a page
    assert fake.mutable == 0  # every request asked for immutable ids
    fields = next(iter(store.fields.values()))
    assert fields["queue"] == MAILBOX and fields["channel"] == "email"
    # Sent Items come without headers: the reply joins its thread by conversationId.
    for ticket in store.events:
        authors = [m.author for m in rules.in_order(store.history(ticket))
                   if isinstance(m, Message)]  # fmt: skip
        assert authors == ["customer", "agent", "customer"]


def test_an_incremental_round_over_several_pages_and_a_restart(fake, url):
    last = thread(fake, 0)
    store = Store()
    store.sync(connect(url, page=2))
    for n in range(5):
        fake.deliver(minutes(100 + n), f"n{n}@x.test", MAILBOX, f"New {n}")
    fake.deliver(minutes(120), "cy@x.test", MAILBOX, "RE: Help", reply_to=last)
    fake.read(last)  # an update that names only id, isRead, parentFolderId
    fake.log.clear()
    restarted = Store()  # a new process from the stored cursor
    restarted.cursor, restarted.events = store.cursor, store.events
    batches = restarted.sync(connect(url, page=2))
    assert all("$deltatoken" in q or "$skiptoken" in q for _, q in delta_requests(fake))
    assert len([f for f, _ in delta_requests(fake) if f == "inbox"]) == 4  # 7 items, 2 a page
    assert len(restarted.events) == 6 and len(messages(restarted)) == 8
    assert not restarted.notes  # the read update was no news
    again = restarted.sync(connect(url))
    assert [(len(b.changes), b.done) for b in again] == [(0, True)]
    assert batches[-1].cursor["delta"] != store.cursor["delta"]


def test_partial_updates_are_merged_never_replacing(fake, url):
    fake.echo()  # each new message also comes back as {id, isRead, parentFolderId}
    thread(fake, 0, replies=2)
    store = Store()
    store.sync(connect(url, page=2))
    assert len(messages(store)) == 3 and not store.notes
    ticket = next(iter(store.events))
    assert store.fields[ticket]["subject"] == "RE: Help"


def test_solved_folder_solves_and_a_customer_reply_reopens(fake, url):
    solved = fake.folder("Solved")
    last = thread(fake, 0, replies=1)
    clock = [minutes(10)]
    store = Store()
    connector = connect(url, clock, solved_folder="solved")
    store.sync(connector)
    ticket = next(iter(store.events))
    fake.move(last, solved, minutes(15))
    clock[0] = minutes(20)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "solved"
    fake.deliver(minutes(30), "cy@x.test", MAILBOX, "RE: Help", reply_to=last)
    clock[0] = minutes(31)
    store.sync(connector)
    fake.move(last, "inbox", minutes(35))  # moved back out of a thread already open
    clock[0] = minutes(40)
    store.sync(connector)
    changes = [(e.at, e.new) for e in rules.in_order(store.history(ticket))
               if isinstance(e, FieldChange)]  # fmt: skip
    assert changes == [(minutes(15), "solved"), (minutes(30), "open")]
    fake.move(last, solved, minutes(45))
    clock[0] = minutes(50)
    store.sync(connector)
    fake.move(last, "inbox", minutes(55))
    clock[0] = minutes(60)
    store.sync(connector)
    changes = [(e.at, e.new) for e in rules.in_order(store.history(ticket))
               if isinstance(e, FieldChange)]  # fmt: skip
    assert changes[2:] == [(minutes(45), "solved"), (minutes(60), "open")]
    with pytest.raises(FatalError, match="no mail folder 'Done'"):
        Store().sync(connect(url, solved_folder="Done"))


def test_authors_auto_replies_and_pending(fake, url):
    root = fake.deliver(minutes(0), "cy@x.test", MAILBOX, "Help")
    ooo = fake.deliver(minutes(1), "cy@x.test", MAILBOX, "Automatic reply: Help",
                       reply_to=root, headers=[("Auto-Submitted", "auto-replied")])  # fmt: skip
    reply = fake.deliver(minutes(2), AGENT, "cy@x.test", "RE: Help", folder="sentitems",
                         reply_to=ooo)  # fmt: skip
    fake.deliver(minutes(3), "list@x.test", MAILBOX, "RE: Help", reply_to=reply,
                 headers=[("Precedence", "bulk")])  # fmt: skip
    store = Store()
    store.sync(connect(url, pending_on_reply=True))
    assert len(store.events) == 1
    events = rules.in_order(store.history(next(iter(store.events))))
    assert isinstance(events[0], Created) and events[0].by == "customer"
    assert [(e.at, e.author) for e in events if isinstance(e, Message)] == [
        (minutes(0), "customer"), (minutes(1), "system"), (minutes(2), "agent"),
        (minutes(3), "system")]  # fmt: skip
    assert [(e.at, e.new) for e in events if isinstance(e, FieldChange)] == [
        (minutes(2), "pending")]  # fmt: skip


# -- failures ------------------------------------------------------------------------------


def test_a_rate_limited_sync_waits_as_told(fake, url):
    for n in range(4):
        thread(fake, n * 10, replies=1, customer=f"c{n}@x.test")
    fake.limit(every=3, retry_after=1)
    store = Store()
    store.sync(connect(url, page=2))
    assert fake.windows >= 1 and fake.limited >= 1
    assert fake.early == 0  # nothing came before Retry-After was over
    assert len(messages(store)) == 8


def test_a_5xx_burst_is_ridden_out(fake, url):
    thread(fake, 0, replies=3)
    fake.fail(DELTA, 503, 500, 504)
    store = Store()
    assert store.sync(connect(url))[-1].done
    assert fake.faults == [(DELTA, [])] and len(messages(store)) == 4


@pytest.mark.parametrize("first", [True, False])
def test_a_truncated_page_keeps_the_cursor(fake, url, first):
    thread(fake, 0, replies=5)  # three in the inbox: two pages
    store = Store()
    if not first:
        store.sync(connect(url, page=2))
        for n in range(4):
            fake.deliver(minutes(50 + n), f"n{n}@x.test", MAILBOX, f"New {n}")
    before = store.cursor
    fake.fail("/inbox/messages/delta", "pass", "truncate")
    stored: list[Batch] = []
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(url, page=2), into=stored)
    assert stored == [] and store.cursor == before  # nothing delivered, links kept
    store.sync(connect(url, page=2))
    assert len(messages(store)) == (6 if first else 10)


def test_revoked_credentials_stop_the_connector_without_a_secret(fake, url):
    thread(fake, 0)
    connector = connect(url)
    Store().sync(connector)
    tokens = set(fake.tokens)
    fake.revoke()
    with pytest.raises(FatalError) as caught:
        Store().sync(connector)
    message = str(caught.value)
    assert "HTTP 401 invalid_client" in message
    for secret in (CLIENT_SECRET, *tokens):
        assert secret not in message
    assert fake.token_requests == 2


@pytest.mark.parametrize("status, code", [(410, "SyncStateNotFound"),
                                          (400, "resyncRequired")])  # fmt: skip
def test_an_expired_sync_state_restarts_the_folder_without_duplicates(fake, url, status, code):
    solved = fake.folder("Solved")
    last = thread(fake, 0, replies=1)
    thread(fake, 10, replies=2, customer="dee@x.test")
    clock = [minutes(20)]
    store = Store()
    connector = connect(url, clock, solved_folder=solved)
    store.sync(connector)
    fake.move(last, solved, minutes(25))
    clock[0] = minutes(30)
    store.sync(connector)
    fake.expire(status, code)
    fresh = fake.deliver(minutes(40), "nia@x.test", MAILBOX, "Another")
    clock[0] = minutes(41)
    delivered = len(store.delivered)
    store.sync(connector)
    assert sum("had to start again" in n for n in store.notes) == 3  # every folder
    assert len(store.delivered) - delivered == 1  # only the new message
    assert len(messages(store)) == 6  # each once
    statuses = sorted(f["status"] for f in store.fields.values())
    assert statuses == ["open", "open", "solved"]
    assert fresh


# -- the scenario through the monitor --------------------------------------------------------


def told(story: Story) -> Story:
    """The story as Graph tells it (see the module's docstring)."""
    steps: list[Step] = []
    status = "open"
    for step in story.steps:
        if step.kind == "message" and step.public and step.who != "system":
            steps.append(step)
            new = status
            if step.who == "customer" and status in ("pending", "solved"):
                new = "open"
            elif step.who == "agent" and status == "open":
                new = "pending"
            if new != status:
                steps.append(Step(step.when, "status", value=new))
                status = new
        elif step.kind == "status" and step.value == "solved":
            steps.append(step)
            status = "solved"
    return dataclasses.replace(story, priority="normal", steps=tuple(steps))


def told_events(story: Story) -> list[Any]:
    events = scenario.expected_events(told(story))
    first = events[0]
    assert isinstance(first, Created)
    fields = {**first.fields, "status": "open", "queue": MAILBOX}
    return [dataclasses.replace(first, fields=fields), *events[1:]]


def test_the_scenario_gives_the_engines_clocks(fake, url, tmp_path):
    solved = fake.folder("Solved")
    fake.tell(STORIES, solved)
    connector = connect(url, page=3, solved_folder="Solved", pending_on_reply=True)
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "gr", "type": "graph", "url": url, "tenant_id": TENANT,
                        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                        "mailbox": MAILBOX, "agents": ["@acme.test"],
                        "solved_folder": "Solved", "pending_on_reply": True,
                        "start": (T0 - dt.timedelta(days=1)).isoformat()}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    spec = load_config(path, now=NOW).connectors[0]
    assert isinstance(connector_types()[spec.type](spec.name, spec.options()), GraphConnector)
    app = create_app(load_config(path, now=NOW), clock=lambda: NOW, connectors={"gr": connector})
    upgrade(app)
    register_connectors(app)
    assert app.extensions["slamon"].scheduler.sync_once("gr")
    with app.app_context():
        tickets = db.session.scalars(select(Ticket)).all()
        assert len(tickets) == len(STORIES)
        by_customer = {t.requester: t for t in tickets}
        for story in STORIES:
            ticket = by_customer[f"{story.key}@customer.test"]
            expected = rules.evaluate("gr", told_events(story), RULES, NOW)
            stored = stored_clocks(ticket.id)
            assert stored and stored == engine_clocks(expected), story.key
            end = told(story).status_at_end()
            assert ticket.status == ("open" if end == "new" else end), story.key
