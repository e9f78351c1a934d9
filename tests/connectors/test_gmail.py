"""The Gmail connector against a fake Gmail API v1 on loopback (tests/fakes/gmail.py): the
first sync by messages.list + messages.get, the incremental one by history.list page by
page, resumed from a stored cursor, through rate limits, 5xx bursts, truncated pages, a
revoked grant and an expired historyId; labels, replies and auto-replies as statuses and
authors; and the shared scenario told as mail, synced into a real monitor, giving the clocks
the engine gives for the story as mail tells it.

Mail cannot tell all of the scenario: internal notes, priorities, ratings and channels other
than email are left out, and the statuses follow from mail (``pending_on_reply``: an agent's
reply sets pending, a customer's sets open, the solved label solves). :func:`told` is the
story so; a status the story sets by hand is not told unless it is "solved".
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
from connectors.gmail import HEADERS, GmailConnector, token_url
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import Ticket, db
from rules.events import Created, FieldChange, Message
from tests.connectors.harness import Store, engine_clocks, shape, stored_clocks
from tests.fakes import scenario
from tests.fakes.gmail import AGENT, MAILBOX, FakeGmail
from tests.fakes.scenario import STORIES, T0, Step, Story, minutes
from tests.fakes.serve import FakeServer

CLIENT_ID, CLIENT_SECRET = "gm-7c1d.apps.googleusercontent.com", "GOCSPX-s3cret-9f8e7d6c"
REFRESH = "1//0g-refresh-token-5b4a3c2d1e"
NOW = T0 + dt.timedelta(days=2)
RULES = rules.load_rules(scenario.RULES)
USERS = "/gmail/v1/users/me"


@pytest.fixture
def fake(server: FakeServer) -> FakeGmail:
    return server.serve(FakeGmail(CLIENT_ID, CLIENT_SECRET, REFRESH))


@pytest.fixture
def url(server: FakeServer, fake: FakeGmail) -> str:
    return server.url


def connect(url: str, clock: list[dt.datetime] | None = None, **options: Any) -> GmailConnector:
    given = {"url": url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
             "refresh_token": REFRESH, "agents": ["@acme.test"],
             "start": T0 - dt.timedelta(days=1)}  # fmt: skip
    page = options.pop("page", 500)
    now = clock or [NOW]
    return GmailConnector("gm", {**given, **options}, clock=lambda: now[0], page=page)


def requests_to(fake: FakeGmail, path: str) -> list[dict[str, list[str]]]:
    return [
        parse_qs(urlsplit(p.split(" ", 1)[1]).query)
        for p in fake.log
        if urlsplit(p.split(" ", 1)[1]).path == path
    ]


def thread(fake: FakeGmail, start: float, replies: int = 1, customer: str = "cy@x.test") -> str:
    """A customer's message and alternating agent/customer replies a minute apart."""
    last = fake.deliver(minutes(start), customer, MAILBOX, "Help")
    for n in range(1, replies + 1):
        if n % 2:
            last = fake.deliver(minutes(start + n), AGENT, customer, "Re: Help", reply_to=last,
                                labels=["SENT"])  # fmt: skip
        else:
            last = fake.deliver(minutes(start + n), customer, MAILBOX, "Re: Help", reply_to=last)
    return last


def messages(store: Store) -> list[Message]:
    return [e for t in store.events for e in store.history(t) if isinstance(e, Message)]


# -- the sync ------------------------------------------------------------------------------


def test_registered_and_token_endpoint():
    assert connector_types()["gmail"] is GmailConnector
    assert token_url("https://gmail.googleapis.com") == "https://oauth2.googleapis.com/token"
    assert token_url("http://127.0.0.1:9") == "http://127.0.0.1:9/token"


def test_first_sync_lists_gets_headers_only_and_stores_the_history_id(fake, url):
    for n in range(7):
        thread(fake, n * 10, replies=2, customer=f"c{n}@x.test")
    fake.deliver(T0 - dt.timedelta(days=3), "old@x.test", MAILBOX, "Before start")
    fake.deliver(minutes(90), "spam@x.test", MAILBOX, "Buy", labels=["SPAM"])
    fake.deliver(minutes(91), AGENT, "x@x.test", "Draft", labels=["DRAFT"])
    store = Store()
    batches = store.sync(connect(url, page=4))
    assert batches[-1].done and store.cursor["history"] == str(fake.history_id)
    assert len(store.events) == 7  # seven threads; spam, drafts and old mail left out
    assert len(messages(store)) == 21
    lists = requests_to(fake, f"{USERS}/messages")
    assert {tuple(q["labelIds"]) for q in lists} == {("INBOX",), ("SENT",)}
    assert all(q["maxResults"] == ["4"] and "q" not in q for q in lists)
    assert len([q for q in lists if q["labelIds"] == ["INBOX"]]) == 4  # 15 in the inbox
    gets = [q for p, q in ((p, parse_qs(urlsplit(p.split(" ", 1)[1]).query)) for p in fake.log)
            if "/messages/" in p]  # fmt: skip
    assert gets and all(q["format"] == ["metadata"] for q in gets)
    assert all(q["metadataHeaders"] == list(HEADERS) for q in gets)
    fields = next(iter(store.fields.values()))
    assert fields["channel"] == "email" and fields["queue"] == MAILBOX
    assert fields["status"] == "open" and fields["priority"] == "normal"


def test_incremental_sync_over_several_history_pages(fake, url):
    first = thread(fake, 0)
    store = Store()
    store.sync(connect(url, page=3))
    for n in range(8):  # eight new threads, one reply to the first
        fake.deliver(minutes(100 + n), f"n{n}@x.test", MAILBOX, f"New {n}")
    fake.deliver(minutes(120), "cy@x.test", MAILBOX, "Re: Help", reply_to=first)
    fake.log.clear()
    batches = store.sync(connect(url, page=3))
    pages = requests_to(fake, f"{USERS}/history")
    assert len(pages) == 3 and pages[0]["historyTypes"] == [
        "messageAdded", "labelAdded", "labelRemoved"]  # fmt: skip
    assert [p.get("pageToken") for p in pages] == [None, ["3"], ["6"]]
    assert not requests_to(fake, f"{USERS}/messages")  # no listing again
    assert len(store.events) == 9 and len(messages(store)) == 11
    assert batches[-1].cursor["history"] == str(fake.history_id)
    again = store.sync(connect(url))  # nothing changed: no `history` key at all
    assert [(len(b.changes), b.done) for b in again] == [(0, True)]


def test_a_restarted_process_resumes_from_the_stored_cursor(fake, url):
    thread(fake, 0, replies=1)
    store = Store()
    store.sync(connect(url))
    seen = {t: set(e) for t, e in store.events.items()}
    fake.deliver(minutes(300), "nia@x.test", MAILBOX, "Another")
    restarted = Store()
    restarted.cursor, restarted.events = store.cursor, store.events
    batches = restarted.sync(connect(url))
    assert len([c for b in batches for c in b.changes]) == 1
    fresh = set(restarted.events) - set(seen)
    assert len(fresh) == 1
    assert shape(restarted.history(fresh.pop()))[0][:3] == ("created", minutes(300), "customer")


def test_solved_label_solves_and_a_customer_reply_reopens(fake, url):
    solved = fake.label("Solved")
    last = thread(fake, 0, replies=1)
    clock = [minutes(10)]
    store = Store()
    connector = connect(url, clock, solved_label="solved")  # a name, in any case
    store.sync(connector)
    ticket = next(iter(store.events))
    fake.relabel(last, add=[solved])
    clock[0] = minutes(20)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "solved"
    fake.deliver(minutes(30), "cy@x.test", MAILBOX, "Re: Help", reply_to=last)
    clock[0] = minutes(31)
    store.sync(connector)
    fake.relabel(last, add=[solved])  # already there: no change
    fake.relabel(last, remove=[solved])  # taken off an open thread: nothing
    clock[0] = minutes(40)
    store.sync(connector)
    changes = [(e.at, e.new) for e in rules.in_order(store.history(ticket))
               if isinstance(e, FieldChange)]  # fmt: skip
    assert changes == [(minutes(20), "solved"), (minutes(30), "open")]
    fake.relabel(last, add=[solved])
    clock[0] = minutes(50)
    store.sync(connector)
    fake.relabel(last, remove=[solved])
    clock[0] = minutes(60)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "open"
    with pytest.raises(FatalError, match="no label 'Done'"):
        Store().sync(connect(url, solved_label="Done"))


def test_a_label_change_dates_no_later_than_the_next_message(fake, url):
    solved = fake.label("Solved")
    last = thread(fake, 0, replies=1)
    clock = [minutes(5)]
    store = Store()
    connector = connect(url, clock, solved_label=solved)
    store.sync(connector)
    fake.relabel(last, add=[solved])
    fake.deliver(minutes(30), "cy@x.test", MAILBOX, "Re: Help", reply_to=last)
    clock[0] = minutes(60)  # both seen at once: the label came before the reply
    store.sync(connector)
    ticket = next(iter(store.events))
    changes = [(e.at, e.new) for e in rules.in_order(store.history(ticket))
               if isinstance(e, FieldChange)]  # fmt: skip
    assert changes == [(minutes(30) - dt.timedelta(seconds=1), "solved"), (minutes(30), "open")]
    assert store.fields[ticket]["status"] == "open"


def test_authors_auto_replies_and_pending(fake, url):
    root = fake.deliver(minutes(0), "Cy <CY@x.test>", MAILBOX, "Help")
    auto = fake.deliver(minutes(1), MAILBOX, "cy@x.test", "Re: Help", reply_to=root,
                        labels=["SENT"], extra=[("Auto-Submitted", "auto-replied")])  # fmt: skip
    bounce = fake.deliver(minutes(2), "MAILER-DAEMON@x.test", MAILBOX, "Undeliverable",
                          reply_to=auto)  # fmt: skip
    reply = fake.deliver(minutes(3), AGENT, "cy@x.test", "Re: Help", reply_to=bounce,
                         labels=["SENT"])  # fmt: skip
    fake.deliver(minutes(4), "ooo@x.test", MAILBOX, "Re: Help", reply_to=reply,
                 extra=[("Precedence", "auto_reply")])  # fmt: skip
    store = Store()
    store.sync(connect(url, pending_on_reply=True))
    assert len(store.events) == 1
    events = rules.in_order(store.history(next(iter(store.events))))
    assert isinstance(events[0], Created) and events[0].by == "customer"
    assert [(e.at, e.author) for e in events if isinstance(e, Message)] == [
        (minutes(0), "customer"), (minutes(1), "system"), (minutes(2), "system"),
        (minutes(3), "agent"), (minutes(4), "system")]  # fmt: skip
    assert [(e.at, e.new) for e in events if isinstance(e, FieldChange)] == [
        (minutes(3), "pending")
    ]  # the auto-replies changed nothing
    assert store.fields[next(iter(store.events))]["requester"] == "cy@x.test"


def test_odd_messages_are_skipped_and_counted(fake, url):
    thread(fake, 0)
    broken = fake.deliver(minutes(5), "b@x.test", MAILBOX, "Broken")
    fake.odd[broken] = {"internalDate": "soon", "payload": {"headers": "none"}}
    fake.deliver(minutes(6), "c@x.test", MAILBOX, "=?bogus?Q?=FF?=", message_id="", date="")
    store = Store()
    store.sync(connect(url))
    assert len(store.events) == 2
    assert any("skipped 1 message(s)" in n for n in store.notes)


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 403])
def test_a_rate_limited_sync_waits_as_told(fake, url, status):
    for n in range(4):
        thread(fake, n * 10, replies=1, customer=f"c{n}@x.test")
    fake.limit(every=5, retry_after=1, status=status)
    store = Store()
    store.sync(connect(url))
    assert fake.windows >= 1 and fake.limited >= 1
    assert fake.early == 0  # nothing came before the wait was over
    assert len(store.events) == 4 and len(messages(store)) == 8


def test_a_5xx_burst_is_ridden_out(fake, url):
    thread(fake, 0, replies=3)
    fake.fail("/messages/", 500, 503, 502)
    store = Store()
    assert store.sync(connect(url))[-1].done
    assert fake.faults == [("/messages/", [])] and len(messages(store)) == 4


def test_a_truncated_history_page_keeps_the_cursor(fake, url):
    thread(fake, 0)
    store = Store()
    store.sync(connect(url, page=2))
    before = dict(store.cursor)
    for n in range(5):
        fake.deliver(minutes(50 + n), f"n{n}@x.test", MAILBOX, f"New {n}")
    fake.fail("/history", "pass", "truncate")
    stored: list[Batch] = []
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(url, page=2), into=stored)
    assert stored == [] and store.cursor == before  # nothing delivered, nothing skipped
    store.sync(connect(url, page=2))
    assert len(store.events) == 6


def test_a_truncated_list_page_delivers_nothing(fake, url):
    thread(fake, 0, replies=3)
    fake.fail("/messages?", "truncate")
    store = Store()
    with pytest.raises(RetriableError, match="malformed answer"):
        store.sync(connect(url))
    assert store.cursor is None
    store.sync(connect(url))
    assert len(messages(store)) == 4


def test_a_revoked_grant_stops_the_connector_without_a_secret(fake, url):
    thread(fake, 0)
    connector = connect(url)
    Store().sync(connector)
    fake.revoke()
    with pytest.raises(FatalError) as caught:
        Store().sync(connector)
    message = str(caught.value)
    assert "HTTP 400 invalid_grant" in message
    for secret in (CLIENT_SECRET, REFRESH, *fake.tokens):
        assert secret not in message
    assert fake.token_requests == 2  # the access token refused once, renewal refused
    wrong = connect(url, client_secret="other")
    with pytest.raises(FatalError, match="HTTP 401"):
        Store().sync(wrong)


def test_an_expired_history_id_resyncs_without_duplicates(fake, url):
    solved = fake.label("Solved")
    last = thread(fake, 0, replies=1)
    other = thread(fake, 10, replies=2, customer="dee@x.test")
    clock = [minutes(20)]
    store = Store()
    connector = connect(url, clock, solved_label=solved)
    store.sync(connector)
    fake.relabel(last, add=[solved])
    store.sync(connector)
    fake.forget_history()
    fake.deliver(minutes(40), "dee@x.test", MAILBOX, "Re: Help", reply_to=other)
    clock[0] = minutes(41)
    delivered = len(store.delivered)
    batches = store.sync(connector)
    assert any("historyId has expired" in n for n in store.notes)
    assert requests_to(fake, f"{USERS}/history")[-1]["startHistoryId"]  # asked, got 404
    assert len(store.delivered) - delivered == 1  # only the new message
    assert len(messages(store)) == 6  # each once: event ids are Message-ID based
    assert batches[-1].cursor["history"] == str(fake.history_id)
    statuses = sorted(f["status"] for f in store.fields.values())
    assert statuses == ["open", "solved"]


# -- the scenario through the monitor --------------------------------------------------------


def told(story: Story) -> Story:
    """The story as mail tells it (see the module's docstring)."""
    steps: list[Step] = []
    status = "open"
    for step in story.steps:
        if step.kind == "message" and step.public:
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
    solved = fake.label("Solved")
    clock = [T0]
    connector = connect(url, clock, solved_label="Solved", pending_on_reply=True)
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "gm", "type": "gmail", "url": url, "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET, "refresh_token": REFRESH,
                        "agents": ["@acme.test"], "solved_label": "Solved",
                        "pending_on_reply": True,
                        "start": (T0 - dt.timedelta(days=1)).isoformat()}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(load_config(path, now=NOW), clock=lambda: NOW, connectors={"gm": connector})
    upgrade(app)
    register_connectors(app)
    # Played in time from an empty mailbox: the label is applied, and seen, at the instant
    # the story solves.
    instants = sorted({s.when for story in STORIES for s in story.steps
                       if s.kind == "status" and s.value == "solved"} | {T0, NOW})  # fmt: skip
    for instant in instants:
        fake.tell(STORIES, solved, instant)
        clock[0] = instant
        assert app.extensions["slamon"].scheduler.sync_once("gm")
    with app.app_context():
        tickets = db.session.scalars(select(Ticket)).all()
        assert len(tickets) == len(STORIES)
        by_customer = {t.requester: t for t in tickets}
        for story in STORIES:
            ticket = by_customer[f"{story.key}@customer.test"]
            expected = rules.evaluate("gm", told_events(story), RULES, NOW)
            stored = stored_clocks(ticket.id)
            assert stored and stored == engine_clocks(expected), story.key
            end = told(story).status_at_end()
            assert ticket.status == ("open" if end == "new" else end), story.key
