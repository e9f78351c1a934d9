"""The IMAP connector against a real Dovecot 2.3 on loopback (tests/services.py), one fresh
server per test. The tests APPEND messages as customers (INBOX) and agents (Sent, found by
its SPECIAL-USE attribute) with the times they choose as INTERNALDATE and Date, set and
remove keywords, move messages, reset UIDVALIDITY with doveadm, and sync.

The shared scenario is told as mail: customer messages to INBOX, agents' public replies and
the auto-reply in Sent, "solved" as the ``$Solved`` keyword set at the step's time. Mail has
no internal notes, priorities, ratings or explicit pending/open statuses, so those steps are
left out of both the mailbox and the history the engine is given for comparison.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from imapclient import IMAPClient  # type: ignore[import-untyped]
from sqlalchemy import select

import rules
from connectors import FatalError, RetriableError, connector_types
from connectors.imap import ImapConnector
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import Ticket, db
from rules.events import Created, Event, FieldChange, Message
from tests.connectors.harness import Store, engine_clocks, shape, stored_clocks
from tests.fakes import scenario
from tests.fakes.mail_corpus import corpus
from tests.fakes.scenario import STORIES, T0, Story, minutes
from tests.services import Dovecot, dovecot, free_port

RULES = rules.load_rules(scenario.RULES)
AGENT, SUPPORT = "agent@example.test", "support@example.test"
KEYWORD = "$Solved"


@pytest.fixture
def server() -> Iterator[Dovecot]:
    with dovecot() as running:
        yield running


class Mailbox:
    """The test's own IMAP client: writes mail as customers and agents would."""

    def __init__(self, server: Dovecot) -> None:
        self.client = IMAPClient(server.host, server.port, ssl=False)
        self.client.login(server.user, server.password)
        self.server = server
        self.n = 0

    def write(
        self,
        folder: str,
        sender: str,
        to: str,
        subject: str,
        when: dt.datetime,
        *extra: str,
        mid: str | None = None,
        parent: str | None = None,
    ) -> str:
        self.n += 1
        mid = mid or f"<m{self.n}.{time.monotonic_ns()}@mail.test>"
        lines = [
            f"From: {sender}",
            f"To: {to}",
            f"Subject: {subject}",
            f"Date: {email.utils.format_datetime(when)}",
            f"Message-ID: {mid}",
            *extra,
        ]
        if parent:
            lines += [f"In-Reply-To: {parent}", f"References: {parent}"]
        self.append(folder, ("\r\n".join(lines) + "\r\n\r\nbody text\r\n").encode(), when)
        return mid

    def append(self, folder: str, raw: bytes, when: dt.datetime | None = None) -> None:
        self.client.append(folder, raw, msg_time=when)

    def uid_of(self, folder: str, mid: str) -> int:
        self.client.select_folder(folder)
        found = self.client.search(["HEADER", "Message-ID", mid])
        assert len(found) == 1, (folder, mid, found)
        return int(found[0])

    def flag(self, folder: str, mid: str, on: bool = True) -> None:
        uid = self.uid_of(folder, mid)
        (self.client.add_flags if on else self.client.remove_flags)([uid], [KEYWORD])

    def close(self) -> None:
        self.client.logout()


def options(server: Dovecot, **more: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "tls": False,
        "username": server.user,
        "password": server.password,
        "agents": ["@example.test"],
        "solved_keyword": KEYWORD,
        "start": (T0 - dt.timedelta(days=1)).isoformat(),
        **more,
    }


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def connect(server: Dovecot, clock: Clock | None = None, **more: Any) -> ImapConnector:
    return ImapConnector("mail", options(server, **more), clock=clock or Clock(T0), per_round=3)


def ticket_of(store: Store, mid: str) -> str:
    """The ticket whose history holds the message with this Message-ID."""
    wanted = f"mail:{mid.lower()}"
    return next(t for t, events in store.events.items() if wanted in events)


def authors(store: Store, ticket: str) -> list[str]:
    return [e.author for e in rules.in_order(store.history(ticket)) if isinstance(e, Message)]


# -- config and registry ---------------------------------------------------------------------


def test_registered_and_built_from_its_config(tmp_path):
    path = tmp_path / "slamon.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "connectors": [
                    {
                        "name": "mail",
                        "type": "imap",
                        "host": "imap.example.test",
                        "username": "u",
                        "password": "p",
                        "agents": ["@example.test"],
                        "solved_keyword": "$Solved",
                    }
                ]
            }
        )
    )
    spec = load_config(path).connectors[0]
    connector = connector_types()["imap"](spec.name, spec.options())
    assert isinstance(connector, ImapConnector)
    assert (connector.port, connector.tls, connector.folders) == (993, True, ["INBOX"])


# -- threads, agents, automatic mail ---------------------------------------------------------


def test_threads_agents_and_automatic_mail(server):
    box = Mailbox(server)
    cust = "Carla <carla@customer.test>"
    q = box.write("INBOX", cust, SUPPORT, "Printer on fire", minutes(0))
    auto = box.write(
        "Sent",
        SUPPORT,
        cust,
        "Auto: we got it",
        minutes(1),
        "Auto-Submitted: auto-replied",
        parent=q,
    )
    a = box.write("Sent", AGENT, cust, "Re: Printer on fire", minutes(20), parent=q)
    # the agent copied the support address: the same message in INBOX is not a second reply
    box.write("INBOX", AGENT, SUPPORT, "Re: Printer on fire", minutes(20), mid=a, parent=q)
    r = box.write("INBOX", cust, SUPPORT, "Re: Printer on fire", minutes(30), parent=a)
    nohead = box.write(
        "INBOX", cust, SUPPORT, "RE: printer ON fire", minutes(40)
    )  # headers dropped
    ooo = box.write(
        "INBOX", cust, SUPPORT, "Out of office", minutes(41), "X-Autoreply: yes", parent=a
    )
    lst = box.write(
        "INBOX", "News <news@lists.test>", SUPPORT, "Weekly", minutes(42), "Precedence: bulk"
    )
    bounce = box.write("INBOX", "MAILER-DAEMON@mx.test", SUPPORT, "Undelivered", minutes(43))
    other = box.write(
        "INBOX", "Olaf <olaf@customer.test>", SUPPORT, "Re: Printer on fire", minutes(44)
    )
    store = Store()
    connector = connect(server)
    batches = store.sync(connector)
    assert batches[-1].done and len(batches) >= 3  # 3 messages per folder per round
    ticket = ticket_of(store, q)
    for mid in (auto, a, r, nohead, ooo):
        assert ticket_of(store, mid) == ticket
    assert authors(store, ticket) == [
        "customer",
        "system",
        "agent",
        "customer",
        "customer",
        "system",
    ]
    assert ticket_of(store, other) != ticket  # another customer's "Re:" starts its own thread
    assert len(store.events) == 2
    for mid in (lst, bounce):  # automatic mail outside any thread: skipped, noted
        assert not any(f"mail:{mid.lower()}" in e for e in store.events.values())
    assert len([n for n in store.notes if "automatic message" in n]) == 2
    assert connector.counts == {"ingested": 7, "duplicate": 1, "skipped": 2}
    assert store.fields[ticket]["requester"] == "carla@customer.test"
    assert store.fields[ticket]["channel"] == "email"
    # read-only: nothing was marked \Seen
    box.client.select_folder("INBOX")
    flags = box.client.get_flags(box.client.search(["ALL"]))
    assert flags and not any(b"\\Seen" in f for f in flags.values())
    # a second sync brings nothing
    again = store.sync(connect(server))
    assert not any(b.changes for b in again) and again[-1].done


def test_sent_folder_by_name_and_agents_by_address(server):
    box = Mailbox(server)
    box.client.create_folder("Outbox2")
    q = box.write("INBOX", "c@customer.test", SUPPORT, "Hello", minutes(0))
    a = box.write(
        "Outbox2", "someone@elsewhere.test", "c@customer.test", "Re: Hello", minutes(5), parent=q
    )
    b = box.write("INBOX", "Boss@Partner.test", SUPPORT, "Re: Hello", minutes(6), parent=q)
    store = Store()
    store.sync(connect(server, sent_folder="Outbox2", agents=["boss@partner.test"]))
    assert authors(store, ticket_of(store, q)) == ["customer", "agent", "agent"]
    assert ticket_of(store, a) == ticket_of(store, b)


# -- status: keyword, folder, pending --------------------------------------------------------


@pytest.mark.parametrize("condstore", [True, False])
def test_solved_keyword_set_later_and_reopened(server, condstore):
    box = Mailbox(server)
    clock = Clock(minutes(0))
    q = box.write("INBOX", "c@customer.test", SUPPORT, "Broken", minutes(0))
    a = box.write("Sent", AGENT, "c@customer.test", "Re: Broken", minutes(10), parent=q)
    store = Store()
    connector = connect(server, clock)
    connector.use_condstore = condstore
    store.sync(connector)
    ticket = ticket_of(store, q)
    assert store.fields[ticket]["status"] == "open"

    box.flag("Sent", a)
    clock.now = minutes(15)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "solved"
    solved = [e for e in store.history(ticket) if isinstance(e, FieldChange)]
    assert [(e.new, e.at) for e in solved] == [("solved", minutes(15))]

    box.flag("Sent", a, on=False)  # unmarked: open again
    clock.now = minutes(20)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "open"
    box.flag("INBOX", q)
    clock.now = minutes(25)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "solved"
    r = box.write("INBOX", "c@customer.test", SUPPORT, "Re: Broken", minutes(30), parent=a)
    clock.now = minutes(31)
    store.sync(connector)
    assert store.fields[ticket]["status"] == "open" and ticket_of(store, r) == ticket
    statuses = [
        (e.new, e.at) for e in rules.in_order(store.history(ticket)) if isinstance(e, FieldChange)
    ]
    assert statuses == [
        ("solved", minutes(15)),
        ("open", minutes(20)),
        ("solved", minutes(25)),
        ("open", minutes(30)),
    ]


def test_moved_to_the_solved_folder_solves(server):
    box = Mailbox(server)
    clock = Clock(minutes(0))
    q = box.write("INBOX", "c@customer.test", SUPPORT, "Move me", minutes(0))
    store = Store()
    connector = connect(server, clock, solved_folder="Solved")
    store.sync(connector)
    box.client.select_folder("INBOX")
    box.client.move([box.uid_of("INBOX", q)], "Solved")
    clock.now = minutes(50)
    store.sync(connector)
    ticket = ticket_of(store, q)
    assert store.fields[ticket]["status"] == "solved"
    assert connector.counts["duplicate"] == 1  # the moved copy is not a second message


def test_pending_on_reply(server):
    box = Mailbox(server)
    q = box.write("INBOX", "c@customer.test", SUPPORT, "Waiting", minutes(0))
    a = box.write("Sent", AGENT, "c@customer.test", "Re: Waiting", minutes(10), parent=q)
    box.write("INBOX", "c@customer.test", SUPPORT, "Re: Waiting", minutes(20), parent=a)
    box.write("Sent", AGENT, "c@customer.test", "Re: Waiting", minutes(30), parent=a)
    store = Store()
    store.sync(connect(server, pending_on_reply=True))
    ticket = ticket_of(store, q)
    statuses = [
        (e.new, e.at) for e in rules.in_order(store.history(ticket)) if isinstance(e, FieldChange)
    ]
    assert statuses == [("pending", minutes(10)), ("open", minutes(20)), ("pending", minutes(30))]
    assert store.fields[ticket]["status"] == "pending"


# -- incremental: UIDVALIDITY, restart -------------------------------------------------------


def test_uidvalidity_reset_reads_again_without_duplicates(server):
    box = Mailbox(server)
    mids = [
        box.write("INBOX", f"c{n}@customer.test", SUPPORT, f"Q{n}", minutes(n)) for n in range(4)
    ]
    box.write("INBOX", "c9@customer.test", SUPPORT, "No id", minutes(5))
    raw = b"From: x@customer.test\r\nSubject: no message id\r\n\r\n"
    box.append("INBOX", raw, minutes(6))
    store = Store()
    store.sync(connect(server))
    before = {t: dict(e) for t, e in store.events.items()}
    server.doveadm("mailbox", "update", "-u", server.user, "--uid-validity", "4242", "INBOX")
    new = box.write("INBOX", "c1@customer.test", SUPPORT, "Re: Q1", minutes(7), parent=mids[1])
    restarted = Store()  # a new process with the stored cursor
    restarted.cursor = json.loads(json.dumps(store.cursor))
    connector = connect(server)
    restarted.sync(connector)
    assert any("UIDVALIDITY changed" in n for n in restarted.notes)
    assert restarted.cursor and restarted.cursor["folders"]["INBOX"]["validity"] == 4242
    # only the new message made a change; the old ones were recognised (no Message-ID: by content)
    assert connector.counts == {"duplicate": 6, "ingested": 1}
    assert set(restarted.events) == {ticket_of(store, mids[1])}
    assert list(restarted.events[ticket_of(store, mids[1])]) == [f"mail:{new.lower()}"]
    assert set(before) == set(store.events)


def test_resume_after_restart_from_the_stored_cursor(server):
    box = Mailbox(server)
    q = box.write("INBOX", "c@customer.test", SUPPORT, "Resume", minutes(0))
    first = Store()
    first.sync(connect(server))
    a = box.write("Sent", AGENT, "c@customer.test", "Re: Resume", minutes(10), parent=q)
    box.flag("INBOX", q)
    later = Store()
    later.cursor = json.loads(json.dumps(first.cursor))
    connector = connect(server, Clock(minutes(11)))
    later.sync(connector)
    ticket = ticket_of(first, q)
    assert list(later.events) == [ticket] and ticket_of(later, a) == ticket
    assert later.fields[ticket]["status"] == "solved"
    assert connector.counts == {"ingested": 1}


# -- the scenario through a real monitor -----------------------------------------------------


def told_as_mail(story: Story) -> list[Event]:
    """The history a mailbox can tell of a story (see the module's docstring)."""
    events: list[Event] = []
    first = next(s for s in story.steps if s.kind == "message")
    fields = {"status": "open", "priority": "normal", "queue": "", "channel": "email"}
    events.append(Created(f"{story.key}-c", story.created, fields, by=first.who))
    for n, step in enumerate(story.steps):
        if step.kind == "message" and step.public:
            events.append(Message(f"{story.key}-{n}", step.when, step.who, seq=n + 1))
        elif step.kind == "status" and step.value == "solved":
            events.append(FieldChange(f"{story.key}-{n}", step.when, "status", "solved", seq=n + 1))
    return events


def test_the_scenario_through_a_real_monitor(server, tmp_path):
    box = Mailbox(server)
    clock = Clock(T0)
    now = T0 + dt.timedelta(hours=10)
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "mail", "type": "imap", **options(server)}],
    }
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path, now=now)
    connector = ImapConnector("mail", loaded.connectors[0].options(), clock=clock, per_round=2)
    app = create_app(loaded, clock=lambda: now, connectors={"mail": connector})
    upgrade(app)
    register_connectors(app)
    scheduler = app.extensions["slamon"].scheduler

    steps = sorted(
        ((step.when, n, story) for story in STORIES for n, step in enumerate(story.steps)),
        key=lambda x: (x[0], x[1]),
    )
    last: dict[str, tuple[str, str]] = {}  # story -> (folder, Message-ID) of its last message
    first: dict[str, str | None] = {}  # story -> its first Message-ID
    for when, n, story in steps:
        step = story.steps[n]
        customer = f"{story.key}@customer.test"
        if step.kind == "message" and step.public:
            parent = last.get(story.key, ("", None))[1]
            first.setdefault(story.key, None)
            subject = story.subject if parent is None else f"Re: {story.subject}"
            if step.who == "customer":
                mid = box.write("INBOX", customer, SUPPORT, subject, when, parent=parent)
                last[story.key] = ("INBOX", mid)
                first[story.key] = first[story.key] or mid
            elif step.who == "agent":
                mid = box.write("Sent", AGENT, customer, subject, when, parent=parent)
                last[story.key] = ("Sent", mid)
                first[story.key] = first[story.key] or mid
            else:
                box.write(
                    "Sent",
                    SUPPORT,
                    customer,
                    f"Auto: {subject}",
                    when,
                    "Auto-Submitted: auto-replied",
                    parent=parent,
                )
        elif step.kind == "status" and step.value == "solved":
            clock.now = when
            assert scheduler.sync_once("mail")
            box.flag(*last[story.key])
            assert scheduler.sync_once("mail")
    clock.now = now
    assert scheduler.sync_once("mail")
    with app.app_context():
        assert db.session.query(Ticket).count() == len(STORIES)
        for story in STORIES:
            ticket = db.session.scalars(
                select(Ticket).where(Ticket.requester == f"{story.key}@customer.test")
            ).one()
            wanted = engine_clocks(rules.evaluate("mail", told_as_mail(story), RULES, now))
            assert stored_clocks(ticket.id) == wanted and wanted, story.key
            assert ticket.status == ("solved" if story.key in ("printer", "invoice") else "open")
    store = Store()  # the connector's view of the same mailbox, from scratch
    store.sync(connect(server, Clock(now)))
    for story in STORIES:
        ticket = ticket_of(store, str(first[story.key]))
        got = [s for s in shape(store.history(ticket)) if s[0] == "message"]
        assert got == [s for s in shape(told_as_mail(story)) if s[0] == "message"], story.key


# -- IDLE ------------------------------------------------------------------------------------


def test_idle_reports_new_mail(server):
    connector = connect(server)
    stop = threading.Event()
    assert connector.wait_for_change(stop, timeout=0.5) is False  # nothing happened
    store = Store()
    store.sync(connector)  # what the sync saw is the baseline
    box = Mailbox(server)
    box.write("INBOX", "early@customer.test", SUPPORT, "Before IDLE began", minutes(0))
    assert connector.wait_for_change(stop, timeout=5) is True  # at once: since the sync
    store.sync(connector)
    result: list[bool | None] = []
    waiter = threading.Thread(target=lambda: result.append(connector.wait_for_change(stop, 20)))
    began = time.monotonic()
    waiter.start()
    box.write("INBOX", "c@customer.test", SUPPORT, "Instant", minutes(1))
    waiter.join(timeout=20)
    assert result == [True] and time.monotonic() - began < 10
    stop.set()
    assert connector.wait_for_change(stop, timeout=5) in (True, False)  # returns at once
    assert connect(server, idle=False).wait_for_change(threading.Event(), 5) is None


def test_new_mail_is_synced_at_once_through_idle(server, tmp_path):
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        "connectors": [{"name": "mail", "type": "imap", "interval": "1h", **options(server)}],
    }
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(load_config(path))
    upgrade(app)
    register_connectors(app)
    scheduler = app.extensions["slamon"].scheduler
    box = Mailbox(server)
    box.write("INBOX", "first@customer.test", SUPPORT, "Hello", minutes(0))

    def requesters() -> set[str]:
        with app.app_context():
            return set(db.session.scalars(select(Ticket.requester)))

    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while requesters() != {"first@customer.test"}:
            assert time.monotonic() < deadline, "the first sync did not store the mail"
            time.sleep(0.05)
        box.write("INBOX", "second@customer.test", SUPPORT, "Are you there?", minutes(5))
        deadline = time.monotonic() + 10  # the interval is an hour: only IDLE can do it
        while "second@customer.test" not in requesters():
            assert time.monotonic() < deadline, "IDLE did not bring the new mail"
            time.sleep(0.05)
    finally:
        scheduler.stop(timeout=10)


# -- failures --------------------------------------------------------------------------------


def test_wrong_password_is_fatal_without_the_password(server):
    connector = ImapConnector("mail", {**options(server), "password": "wrong-secret-pw"})
    with pytest.raises(FatalError) as caught:
        list(connector.sync(None, threading.Event()))
    assert "wrong-secret-pw" not in str(caught.value) and "login failed" in str(caught.value)


def test_connection_problems_are_retriable(server):
    closed = ImapConnector("mail", {**options(server), "port": free_port()})
    with pytest.raises(RetriableError):
        list(closed.sync(None, threading.Event()))
    tls = ImapConnector("mail", {**options(server), "tls": True})  # the server speaks plain
    with pytest.raises(RetriableError) as caught:
        list(tls.sync(None, threading.Event()))
    assert server.password not in str(caught.value)


# -- the hostile corpus ----------------------------------------------------------------------


def test_hostile_corpus(server):
    box = Mailbox(server)
    odd = corpus()
    assert len(odd) >= 200
    dropped = 0
    for n, item in enumerate(odd):
        try:
            box.append("INBOX", item.raw)
        except Exception:  # Dovecot refuses it (an empty message): deliver it as an MDA would
            drop = server.maildir / "new" / f"{int(time.time())}.odd{n}.slamon"
            drop.parent.mkdir(parents=True, exist_ok=True)
            drop.write_bytes(item.raw)
            if os.geteuid() == 0:
                os.chown(drop, 65534, 65534)
            dropped += 1
    box.client.select_folder("INBOX")
    assert len(box.client.search(["ALL"])) == len(odd)
    assert dropped <= 2

    connector = ImapConnector("mail", options(server, start=None), per_round=40)
    store = Store()
    began = time.monotonic()
    batches = store.sync(connector)
    assert batches[-1].done and time.monotonic() - began < 60
    counts = connector.counts
    assert sum(counts.values()) == len(odd), counts
    assert counts["skipped"] == len(store.notes) and counts["before_start"] == 0
    pattern = re.compile(r"^INBOX UID \d+: skipped: \S.*$")
    assert all(pattern.match(n) for n in store.notes), store.notes[:5]
    assert len({n.split(":")[0] for n in store.notes}) == len(store.notes)  # once per message
    assert counts["duplicate"] >= sum(o.expect == "duplicate" for o in odd)
    assert counts["ingested"] >= sum(o.expect == "ingested" for o in odd)
    assert counts["skipped"] >= sum(o.expect == "skipped" for o in odd)
    messages = sum(len(e) for e in store.events.values())
    assert messages >= counts["ingested"]
    # and once more after a UIDVALIDITY reset: nothing new, nothing twice
    server.doveadm("mailbox", "update", "-u", server.user, "--uid-validity", "777", "INBOX")
    again = ImapConnector("mail", options(server, start=None), per_round=40)
    rerun = Store()
    rerun.cursor = store.cursor
    rerun.sync(again)
    assert again.counts["ingested"] == 0 and not rerun.events
    assert again.counts["skipped"] == counts["skipped"]
