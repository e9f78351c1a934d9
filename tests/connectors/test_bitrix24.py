"""The Bitrix24 connector against a fake portal on loopback (tests/fakes/bitrix24.py): Open
Lines sessions walked page by page and resumed, open sessions re-read for new messages,
bots, operators, votes, lines with CRM off, CRM e-mail threads, missed calls, OAuth token
expiry, the leaky bucket and a paused method, webhook events, and the shared scenario,
synced into a real monitor, giving the clocks the engine gives for the story as Bitrix24
tells it."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

import rules
from connectors import FatalError, connector_types
from connectors.bitrix24 import Bitrix24Connector
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from monitor.models import ConnectorState, EventRow, Ticket, db
from rules.events import Created, Message, Rating, Removed
from tests.connectors.harness import Store, engine_clocks, shape, stored_clocks
from tests.fakes import scenario
from tests.fakes.bitrix24 import FakeBitrix24, as_told, event_body
from tests.fakes.scenario import STORIES, T0
from tests.fakes.serve import serving

CODE = "wh-c0de-5f4e3d2c1b77"
SECRET = "app-token-3k2j1h"
CLIENT_ID, CLIENT_SECRET = "local.5f8e.app", "cl1ent-s3cret-x9"
NOW = T0 + dt.timedelta(days=2)
RULES = rules.load_rules(scenario.RULES)
SUMMER = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)  # 10:00 in Berlin (+02:00)


def minutes(m: float, base: dt.datetime = T0) -> dt.datetime:
    return base + dt.timedelta(minutes=m)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[FakeBitrix24]]]:
    fakes: list[FakeBitrix24] = []

    def app(environ: Any, start_response: Any) -> Any:
        return fakes[-1].app(environ, start_response)

    with serving(app) as base:
        yield base, fakes


@pytest.fixture
def fake(server: tuple[str, list[FakeBitrix24]]) -> FakeBitrix24:
    server[1].append(FakeBitrix24(code=CODE, client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
    return server[1][-1]


@pytest.fixture
def url(server: tuple[str, list[FakeBitrix24]], fake: FakeBitrix24) -> str:
    return server[0]


def connect(base: str, **options: Any) -> Bitrix24Connector:
    tuning = {k: options.pop(k) for k in ("rate", "burst", "batched") if k in options}
    given = {"url": f"{base}/rest/1/{CODE}/", "start": "2020-01-01T00:00:00+00:00"}
    return Bitrix24Connector("bx", {**given, **options}, clock=lambda: NOW,
                             oauth_url=f"{base}/oauth/token/", **tuning)  # fmt: skip


def people(fake: FakeBitrix24) -> tuple[int, int, int]:
    """An operator, a welcome bot and a client."""
    return (fake.user("Olga Operator"), fake.user("Welcome Bot", bot=True),
            fake.user("Cy Client", connector=True))  # fmt: skip


def clock(evaluation: rules.Evaluation, metric: str) -> Any:
    return next(c for c in evaluation.clocks if c.metric == metric)


def calls_of(fake: FakeBitrix24, method: str) -> list[dict[str, Any]]:
    return [params for name, params in fake.log if name == method]


# -- Open Lines sessions ---------------------------------------------------------------------


def test_registered_as_bitrix24():
    assert connector_types()["bitrix24"] is Bitrix24Connector


def test_a_multi_page_walk_delivers_every_session_and_resumes(fake, url):
    portal_now = [NOW.timestamp()]
    fake.clock = lambda: portal_now[0]
    operator, _, _ = people(fake)
    line = fake.line("Support")
    sids = []
    for n in range(120):
        client = fake.user(f"Client{n} Bulk", connector=True)
        sids.append(fake.session(line, client, minutes(n, SUMMER)))
        fake.say(sids[-1], client, minutes(n, SUMMER))
        if n % 2:
            fake.say(sids[-1], operator, minutes(n + 5, SUMMER))
            fake.close(sids[-1], minutes(n + 6, SUMMER))
    portal_now[0] += 600  # the first sync comes later than the overlap
    store = Store()
    batches = store.sync(connect(url, emails=False, calls=False))
    walked = calls_of(fake, "crm.activity.list")
    pages = [p for p in walked if "COMPLETED" not in p["filter"]]
    assert [str(p["filter"][">ID"]) for p in pages] == ["0", "7050", "7100"]
    # Each batch carries 49 histories and the next page of the walk.
    assert all(str(p["start"]) == "-1" and p["order"] == {"ID": "ASC"} for p in walked)
    assert [len(b.changes) for b in batches[:3]] == [49, 49, 22]
    assert batches[-1].done and not batches[-1].changes
    assert len(store.fields) == 120
    history = store.history(str(fake.sessions[sids[1]]["activity"]))
    created = next(e for e in history if isinstance(e, Created))
    assert created.at == minutes(1, SUMMER)  # "+02:00" read as UTC
    assert fake.activities[7001]["START_TIME"] == "2026-07-01T10:00:00+02:00"
    assert shape(history)[-1] == ("field", minutes(7, SUMMER), "status", "solved")
    # Histories came 50 to a batch; the 60 open sessions were not read twice.
    assert (
        fake.per_method["batch"] == 3 and fake.per_method["imopenlines.session.history.get"] == 120
    )

    # A new process resumes: only the new session and the still-open ones come again.
    portal_now[0] += 600
    client = fake.user("Late Client", connector=True)
    late = fake.session(line, client, minutes(500, SUMMER))
    fake.say(late, client, minutes(500, SUMMER))
    again = Store()
    again.cursor = store.cursor
    batches = again.sync(connect(url, emails=False, calls=False))
    delivered = {c.ticket for b in batches for c in b.changes}
    open_ids = {str(fake.sessions[s]["activity"]) for s in sids[::2]}
    assert delivered == open_ids | {str(fake.sessions[late]["activity"])}


def test_an_interrupted_walk_resumes_where_it_stopped(fake, url):
    line = fake.line("Support")
    for n in range(60):
        client = fake.user(f"Client{n} Bulk", connector=True)
        fake.say(fake.session(line, client, minutes(n)), client, minutes(n))
    first = next(connect(url, emails=False, calls=False).sync(None, threading.Event()))
    assert len(first.changes) == 49 and first.cursor["sessions"]["after"] == 7049
    fake.log.clear()
    store = Store()
    store.cursor = first.cursor
    store.sync(connect(url, emails=False, calls=False))
    assert str(calls_of(fake, "crm.activity.list")[0]["filter"][">ID"]) == "7049"
    assert len({c for c in store.delivered}) == 60  # the rest, then every open one again


def test_a_client_message_in_an_open_session_is_seen_at_the_next_poll(fake, url):
    operator, _, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    fake.say(sid, operator, minutes(5))
    store, connector = Store(), connect(url)
    store.sync(connector)
    aid = str(fake.sessions[sid]["activity"])
    stamp = fake.activities[int(aid)]["LAST_UPDATED"]
    fake.say(sid, client, minutes(30))
    assert fake.activities[int(aid)]["LAST_UPDATED"] == stamp  # the activity did not move
    store.sync(connector)
    assert [(e.at, e.author) for e in rules.in_order(store.history(aid))
            if isinstance(e, Message)] == [
        (minutes(0), "customer"), (minutes(5), "agent"), (minutes(30), "customer")]  # fmt: skip


def test_a_session_answered_only_by_a_bot_breaches_first_response(fake, url):
    _, bot, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0), connector="telegrambot")
    fake.say(sid, 0, minutes(0))  # "A new lead has been created"
    fake.say(sid, client, minutes(0))
    fake.say(sid, bot, minutes(1))
    store = Store()
    store.sync(connect(url))
    aid = str(fake.sessions[sid]["activity"])
    assert [e.author for e in store.history(aid) if isinstance(e, Message)] == [
        "system", "customer", "system"]  # fmt: skip
    assert store.fields[aid]["channel"] == "social" and store.fields[aid]["queue"] == "Support"
    history = store.history(aid)
    assert clock(rules.evaluate("bx", history, RULES, minutes(30)), "first_response").state in (
        "on_track", "at_risk")  # fmt: skip
    assert clock(rules.evaluate("bx", history, RULES, minutes(90)), "first_response").state == (
        "breached")  # fmt: skip


def test_an_operator_after_the_bot_greeting_is_the_first_response(fake, url):
    operator, bot, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    fake.say(sid, bot, minutes(0.5))
    fake.say(sid, operator, minutes(12))
    store = Store()
    store.sync(connect(url))
    aid = str(fake.sessions[sid]["activity"])
    first = clock(rules.evaluate("bx", store.history(aid), RULES, NOW), "first_response")
    assert (first.state, first.stopped_at) == ("achieved", minutes(12))
    assert store.fields[aid]["channel"] == "chat" and store.fields[aid]["requester"] == "Cy Client"


def test_a_session_closed_without_an_operator_answer(fake, url):
    _, _, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    fake.close(sid, minutes(40))
    store = Store()
    store.sync(connect(url))
    aid = str(fake.sessions[sid]["activity"])
    assert store.fields[aid]["status"] == "solved"
    assert shape(store.history(aid))[-1] == ("field", minutes(40), "status", "solved")
    evaluation = rules.evaluate("bx", store.history(aid), RULES, NOW)
    assert clock(evaluation, "resolution").state == "achieved"
    assert all(c.state not in ("achieved", "missed", "breached", "on_track")
               for c in evaluation.clocks if c.metric == "first_response")  # fmt: skip


@pytest.mark.parametrize("camel", [True, False], ids=["imolVote", "IMOL_VOTE"])
def test_likes_and_dislikes_are_csat_and_the_heads_vote_is_not(fake, url, camel):
    operator, _, client = people(fake)
    fake.camel = camel
    line = fake.line("Support")
    liked, disliked = (fake.session(line, client, minutes(m)) for m in (0, 1))
    for sid in (liked, disliked):
        fake.say(sid, client, minutes(2))
        fake.say(sid, operator, minutes(3))
        fake.close(sid, minutes(10))
    fake.vote(fake.ask_vote(liked, minutes(10)), "like")
    fake.vote(fake.ask_vote(disliked, minutes(10)), "dislike")
    unanswered = fake.session(line, client, minutes(2))
    fake.ask_vote(unanswered, minutes(11))  # asked, never answered
    fake.head_vote(unanswered, 5)  # a supervisor's rating
    store = Store()
    store.sync(connect(url))
    scores = {sid: [e.score for e in store.history(str(fake.sessions[sid]["activity"]))
                    if isinstance(e, Rating)] for sid in (liked, disliked, unanswered)}  # fmt: skip
    assert scores == {liked: [5], disliked: [1], unanswered: []}


def test_a_line_with_crm_off_is_named_as_unwatched(fake, url):
    _, _, client = people(fake)
    fake.say(fake.session(fake.line("Telegram Sales", crm=False), client, minutes(0)), client,
             minutes(0))  # fmt: skip
    fake.say(fake.session(fake.line("Support"), client, minutes(1)), client, minutes(1))
    store = Store()
    store.sync(connect(url))
    assert len(store.fields) == 1  # the other session has no activity to find
    assert any("not watched" in n and "'Telegram Sales' (id 22)" in n for n in store.notes)
    assert not any("Support" in n for n in store.notes)


def test_only_the_configured_lines_are_read(fake, url):
    _, _, client = people(fake)
    kept, other = fake.line("Support"), fake.line("Sales")
    for line in (kept, other):
        fake.say(fake.session(line, client, minutes(0)), client, minutes(0))
    store = Store()
    store.sync(connect(url, lines=[str(kept)]))
    assert {f["queue"] for f in store.fields.values()} == {"Support"}


def test_a_deleted_session_is_found_by_reconciliation(fake, url):
    _, _, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    store, connector = Store(), connect(url)
    store.sync(connector)
    aid = fake.sessions[sid]["activity"]
    fake.delete(aid)
    store.sync(connector)
    assert shape(store.history(str(aid)))[-1] == ("removed", NOW, "deleted")
    assert store.cursor is not None and store.cursor["open"] == []


def test_batch_errors_are_retried_alone(fake, url):
    _, _, client = people(fake)
    line = fake.line("Support")
    for m in range(3):
        fake.say(fake.session(line, client, minutes(m)), client, minutes(m))
    fake.batch_faults["imopenlines.session.history.get"] = 2
    store = Store()
    store.sync(connect(url))
    assert len(store.fields) == 3 and not store.notes
    alone = [m for m, _ in fake.log if m == "imopenlines.session.history.get"]
    assert len(alone) == 3 + 2  # three in the batch, two of them again on their own


# -- CRM e-mail and calls ------------------------------------------------------------------------


def test_an_email_thread_is_one_ticket(fake, url):
    contact = (3, 15)
    first = fake.email(contact, "Order 5 late", minutes(0))
    fake.email(contact, "Re: Order 5 late", minutes(20), incoming=False)
    fake.email(contact, "RE: Fwd: order 5 late", minutes(60))
    other = fake.email((3, 16), "Order 5 late", minutes(5))
    store = Store()
    store.sync(connect(url, calls=False))
    assert set(store.fields) == {f"mail{first}", f"mail{other}"}
    assert shape(store.history(f"mail{first}")) == [
        ("created", minutes(0), "customer", {"status": "open", "priority": "normal",
                                             "queue": "CRM e-mail", "channel": "email"}),
        ("message", minutes(0), "customer", True),
        ("message", minutes(20), "agent", True),
        ("field", minutes(20), "status", "solved"),
        ("message", minutes(60), "customer", True),
        ("field", minutes(60), "status", "open"),
    ]  # fmt: skip
    assert store.fields[f"mail{first}"]["status"] == "open"  # the last mail is unanswered
    assert store.fields[f"mail{first}"]["requester"] == "client@example.test"


def test_a_deleted_mail_that_was_its_threads_only_message_removes_the_thread(fake, url):
    lone = fake.email((3, 15), "Invoice missing", minutes(0))
    kept = fake.email((3, 15), "Password reset", minutes(1))
    first = fake.email((3, 16), "Refund", minutes(2))
    follow_up = fake.email((3, 16), "Re: Refund", minutes(30))
    store, connector = Store(), connect(url, calls=False)
    store.sync(connector)
    assert store.cursor is not None
    assert store.cursor["mail_open"] == {
        f"mail{lone}": ["3_15", "invoice missing"], f"mail{kept}": ["3_15", "password reset"],
        f"mail{first}": ["3_16", "refund"]}  # fmt: skip
    fake.delete(lone)
    fake.delete(first)
    store.sync(connector)
    assert shape(store.history(f"mail{lone}"))[-1] == ("removed", NOW, "deleted")
    assert store.fields[f"mail{lone}"]["status"] == "closed"
    assert not any(isinstance(e, Removed) for e in store.history(f"mail{kept}"))
    # The first mail of a longer thread is gone: the rest is the thread it now is.
    assert shape(store.history(f"mail{first}"))[-1] == ("removed", NOW, "deleted")
    assert shape(store.history(f"mail{follow_up}"))[:2] == [
        ("created", minutes(30), "customer", {"status": "open", "priority": "normal",
                                              "queue": "CRM e-mail", "channel": "email"}),
        ("message", minutes(30), "customer", True)]  # fmt: skip
    assert set(store.cursor["mail_open"]) == {f"mail{kept}", f"mail{follow_up}"}
    store.sync(connector)  # nothing more gone
    assert set(store.cursor["mail_open"]) == {f"mail{kept}", f"mail{follow_up}"}
    assert not any(isinstance(e, Removed) for e in store.history(f"mail{follow_up}"))


def test_two_missed_calls_then_a_call_back_are_one_ticket(fake, url):
    fake.call("+7 (900) 000-00-01", minutes(0))
    fake.call("79000000001", minutes(10), kind=3)
    fake.call("+49 30 1234", minutes(12), code="200", duration=60)  # answered: no ticket
    fake.call("+79000000001", minutes(25), kind=1, code="603")  # not connected
    back = minutes(40)
    fake.call("7 900 000 00 01", back, kind=1, code="200", duration=95)
    store = Store()
    store.sync(connect(url, emails=False))
    assert list(store.fields) == ["call1"]
    assert (
        store.fields["call1"]["channel"] == "phone" and store.fields["call1"]["status"] == "solved"
    )
    assert shape(store.history("call1"))[1:] == [
        ("message", minutes(0), "customer", True), ("message", minutes(10), "customer", True),
        ("message", back, "agent", True), ("field", back, "status", "solved")]  # fmt: skip
    first = clock(rules.evaluate("bx", store.history("call1"), RULES, NOW), "first_response")
    assert (first.state, first.stopped_at) == ("achieved", back)


def test_a_missed_call_waits_across_polls(fake, url):
    fake.call("+7 900 000-00-02", minutes(0))
    store, connector = Store(), connect(url, emails=False)
    store.sync(connector)
    assert store.fields["call1"]["status"] == "open"
    fake.call("+7 900 000-00-02", minutes(30), kind=2, code="200")
    store.sync(connector)
    assert store.fields["call1"]["status"] == "solved"
    assert store.cursor is not None and store.cursor["calls"]["waiting"] == {}


# -- limits and auth -----------------------------------------------------------------------------


def test_an_expired_token_is_refreshed_once_and_the_new_refresh_token_kept(fake, url):
    _, _, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    options = {"url": url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "refresh_token": "refresh-0"}  # fmt: skip
    store = Store()
    store.sync(connect(url, **options))
    assert fake.refreshes == 1 and len(store.fields) == 1
    assert Bitrix24Connector.cursor_secrets == ("refresh_token",)
    assert store.cursor["refresh_token"] == fake.refresh_token != "refresh-0"  # the rotated one
    fake.expire()
    fake.say(sid, client, minutes(9))
    store.sync(connect(url, **options))  # a new process: the cursor's token, not the config's
    assert fake.refreshes == 2 and store.cursor["refresh_token"] == fake.refresh_token
    assert len([e for e in store.history(str(fake.sessions[sid]["activity"]))
                if isinstance(e, Message)]) == 2  # fmt: skip
    fake.refresh_token = "revoked"
    fake.expire()
    with pytest.raises(FatalError) as caught:
        Store().sync(connect(url, **options))
    assert "invalid_grant" in str(caught.value) and CLIENT_SECRET not in str(caught.value)


def test_a_sync_inside_the_bucket_gets_no_503_and_one_without_it_backs_off(fake, url):
    fake.speed = 20.0  # the portal drains 40 requests a second
    _, _, client = people(fake)
    line = fake.line("Support")
    for n in range(130):
        fake.say(fake.session(line, client, minutes(n)), client, minutes(n))
    store = Store()
    store.sync(connect(url, batched=False, rate=2.0 * fake.speed, burst=40))
    assert fake.requests > 130 and fake.limited == 0
    assert len(store.fields) == 130
    fake.requests = 0
    greedy = connect(url, batched=False, rate=1e6, burst=1e6)
    Store().sync(greedy)
    assert fake.limited > 0  # told to slow down, it backed off and finished
    assert greedy.last is not None and greedy.last.limited == fake.limited


def test_a_method_over_its_time_limit_pauses_alone(fake, url):
    _, _, client = people(fake)
    fake.say(fake.session(fake.line("Support"), client, minutes(0)), client, minutes(0))
    first = fake.email((3, 15), "Hello", minutes(1))
    fake.call("+7 900 000-00-03", minutes(2))
    fake.blocked = {"voximplant.statistic.get"}
    store = Store()
    store.sync(connect(url))
    assert set(store.fields) == {"7001", f"mail{first}"}
    assert any("voximplant.statistic.get" in n and "time limit" in n for n in store.notes)
    assert "calls" not in store.cursor
    fake.blocked = set()
    store.sync(connect(url))
    assert "call1" in store.fields


# -- webhooks and the monitor ------------------------------------------------------------------


def test_webhook_events(fake, url):
    connector = connect(url, webhook_secret=SECRET)
    update = event_body("ONCRMACTIVITYUPDATE", SECRET, **{"FIELDS.ID": "7001"})
    assert connector.verify_webhook({}, update)
    assert not connector.verify_webhook({}, event_body("ONCRMACTIVITYUPDATE", "wrong"))
    assert not connect(url).verify_webhook({}, update)  # no secret: nothing passes
    assert connector.webhook_tickets(update) == ("7001",)
    camel = event_body("onCrmActivityAdd", SECRET, **{"FIELDS.ID": "7002"})
    assert connector.webhook_tickets(camel) == ("7002",)
    call = event_body("ONVOXIMPLANTCALLEND", SECRET, **{"CALL_ID": "x", "CALL_FAILED_CODE": "304"})
    assert connector.webhook_tickets(call) == ()
    deleted = event_body("ONCRMACTIVITYDELETE", SECRET, **{"FIELDS.ID": "7001"})
    assert connector.webhook_tickets(deleted) == ()  # a sync's reconciliation finds it


def test_fetch_tickets_rereads_a_session_or_a_mail_thread(fake, url):
    operator, _, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    fake.say(sid, operator, minutes(3))
    aid = fake.sessions[sid]["activity"]
    gone = fake.session(fake.line("Other"), client, minutes(1))
    fake.delete(fake.sessions[gone]["activity"])
    first = fake.email((3, 15), "Broken", minutes(2))
    reply = fake.email((3, 15), "Re: Broken", minutes(9), incoming=False)
    asked = [str(aid), str(fake.sessions[gone]["activity"]), str(reply)]
    changes = list(connect(url).fetch_tickets(asked, threading.Event()))
    assert [c.ticket for c in changes] == [str(aid), f"mail{first}"]
    assert [e.author for e in changes[0].events if isinstance(e, Message)] == ["customer", "agent"]
    assert changes[0].fields["queue"] == "Support"
    assert changes[1].fields["status"] == "solved"


def monitor_app(tmp_path: Path, url: str, connector: Bitrix24Connector, **options: Any) -> Any:
    config = {
        "database": f"sqlite:///{tmp_path / 'slamon.db'}",
        **scenario.RULES,
        "connectors": [{"name": "bx", "type": "bitrix24", "url": f"{url}/rest/1/{CODE}/",
                        "webhook_secret": SECRET, "start": "2020-01-01", **options}],
    }  # fmt: skip
    path = tmp_path / "slamon.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(load_config(path, now=NOW), clock=lambda: NOW, connectors={"bx": connector})
    upgrade(app)
    register_connectors(app)
    return app


def test_the_scenario_gives_the_engines_clocks(fake, url, tmp_path):
    ids = fake.load(STORIES)
    app = monitor_app(tmp_path, url, connect(url, webhook_secret=SECRET))
    assert app.extensions["slamon"].scheduler.sync_once("bx")
    with app.app_context():
        for story in STORIES:
            told = as_told(story)
            ticket = db.session.scalars(
                select(Ticket).where(Ticket.source_id == str(ids[story.key]))
            ).one()
            stored = stored_clocks(ticket.id)
            wanted = engine_clocks(rules.evaluate("bx", scenario.expected_events(told), RULES, NOW))
            assert stored == wanted, story.key
            assert stored, story.key
            ended = told.status_at_end()
            assert ticket.status == ("solved" if ended in ("solved", "closed") else "open")
    client = app.test_client()
    with app.app_context():
        events = db.session.query(EventRow).count()
    bad = client.post("/api/v1/webhooks/bx", data=event_body("ONCRMACTIVITYUPDATE", "nope",
                      **{"FIELDS.ID": "7001"}),
                      content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert bad.status_code == 401
    with app.app_context():
        assert db.session.query(EventRow).count() == events
    good = client.post("/api/v1/webhooks/bx", data=event_body("ONCRMACTIVITYUPDATE", SECRET,
                       **{"FIELDS.ID": "7001"}),
                       content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert good.status_code == 202


def test_the_webhook_code_appears_in_no_output(fake, url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    _, _, client = people(fake)
    fake.say(fake.session(fake.line("Support"), client, minutes(0)), client, minutes(0))
    fake.say(fake.session(fake.line("Chats", crm=False), client, minutes(0)), client, minutes(0))
    app = monitor_app(tmp_path, url, connect(url, webhook_secret=SECRET))
    scheduler = app.extensions["slamon"].scheduler
    assert scheduler.sync_once("bx")
    fake.code = "another-code"  # the portal no longer knows the webhook
    assert not scheduler.sync_once("bx")
    http = app.test_client()
    listing = http.get("/api/v1/connectors").get_json()["connectors"][0]
    assert "NO_AUTH_FOUND" in listing["last_error"]
    assert any("'Chats'" in note and "not watched" in note for note in listing["notes"])
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    outputs = [str(listing), http.get("/metrics").get_data(as_text=True), ours,
               http.get("/").get_data(as_text=True)]  # fmt: skip
    for output in outputs:
        assert CODE not in output


def test_a_paused_history_read_keeps_the_walk_before_its_page(fake, url):
    _, _, client = people(fake)
    fake.say(fake.session(fake.line("Support"), client, minutes(0)), client, minutes(0))
    mail = fake.email((3, 15), "Hello", minutes(1))
    fake.blocked = {"imopenlines.session.history.get"}
    store = Store()
    store.sync(connect(url, calls=False))
    assert set(store.fields) == {f"mail{mail}"}  # e-mail went on
    assert store.cursor is not None and "sessions" not in store.cursor
    assert fake.per_method["imopenlines.session.history.get"] == 2  # in the batch, then alone
    fake.blocked = set()
    store.sync(connect(url, calls=False))
    assert "7001" in store.fields


def test_the_rotated_refresh_token_appears_in_no_output(fake, url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    _, _, client = people(fake)
    sid = fake.session(fake.line("Support"), client, minutes(0))
    fake.say(sid, client, minutes(0))
    options = {"url": url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "refresh_token": "refresh-0"}  # fmt: skip
    oauth = {k: v for k, v in options.items() if k != "url"}
    app = monitor_app(tmp_path, url, connect(url, **options), **oauth)
    scheduler = app.extensions["slamon"].scheduler
    assert scheduler.sync_once("bx")
    fake.expire()
    fake.say(sid, client, minutes(5))
    assert scheduler.sync_once("bx")  # refreshed again: a second rotated token
    rotated = fake.refresh_token
    assert fake.refreshes == 2 and rotated not in ("refresh-0", "")
    with app.app_context():
        stored = db.session.get(ConnectorState, "bx")
        assert stored is not None and stored.cursor["refresh_token"] == rotated  # kept, plainly
    http = app.test_client()
    listing = http.get("/api/v1/connectors").get_json()["connectors"][0]
    assert listing["cursor"]["refresh_token"] == "***" and "sessions" in listing["cursor"]
    # Any text the monitor logs or stores passes its redactor, which knows the new token.
    redact = app.extensions["slamon"].redact
    assert redact(f"refresh failed for {rotated}") == "refresh failed for ***"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    outputs = [http.get("/api/v1/connectors").get_data(as_text=True),
               http.get("/metrics").get_data(as_text=True), ours,
               http.get("/").get_data(as_text=True)]  # fmt: skip
    for output in outputs:
        assert rotated not in output and CLIENT_SECRET not in output


# -- suggest-policies ------------------------------------------------------------------------


def slamon(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    command = [str(Path(sys.executable).with_name("slamon")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_suggested_policies_carry_each_lines_kpis_and_working_time(fake, url, tmp_path):
    support = fake.line("Support", first_answer=600, further_answer=1800)
    fake.line("Sales", first_answer=5400, hours=("0", "23.59"), days_off=(), holidays=())
    fake.line("Night desk", further_answer=900, hours=("22:00", "06:00"), days_off=("SU",),
              zone="Asia/Yekaterinburg")  # fmt: skip
    fake.line("Always on", first_answer=120, worktime=False)
    fake.line("No targets")
    fake.line("Telegram Sales", crm=False, first_answer=60)
    connectors = [{"name": "bx", "type": "bitrix24", "url": f"{url}/rest/1/{CODE}/"}]
    config = tmp_path / "source.yaml"
    config.write_text(yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'x.db'}",
                                      "connectors": connectors}))  # fmt: skip
    run = slamon("suggest-policies", "--connector", "bx", "--config", str(config))
    assert run.returncode == 0, run.stderr
    suggested = yaml.safe_load(run.stdout)
    policies = {p["match"]["queue"][0]: p for p in suggested["policies"]}
    calendars = {c["name"]: c for c in suggested["calendars"]}
    assert set(policies) == {"Support", "Sales", "Night desk", "Always on"}
    assert policies["Support"] == {
        "name": f"bx-line-{support}", "match": {"connector": ["bx"], "queue": ["Support"]},
        "calendar": f"bx-line-{support}",
        "targets": {"first_response": "10m", "next_response": "30m"}}  # fmt: skip
    year = dt.date.today().year
    assert calendars[f"bx-line-{support}"] == {
        "name": f"bx-line-{support}", "timezone": "Europe/Berlin",
        "hours": {"mon-fri": ["09:00-18:30"]},
        "holidays": {"dates": [f"{year}-01-01", f"{year}-12-25", f"{year + 1}-01-01",
                               f"{year + 1}-12-25"]}}  # fmt: skip
    # A line with one KPI gets that target alone.
    assert policies["Sales"]["targets"] == {"first_response": "1h30m"}
    assert calendars[policies["Sales"]["calendar"]]["hours"] == {"mon-sun": ["00:00-24:00"]}
    night = policies["Night desk"]
    assert night["targets"] == {"next_response": "15m"}
    assert calendars[night["calendar"]]["hours"] == {"mon-sat": ["00:00-06:00", "22:00-24:00"]}
    assert calendars[night["calendar"]]["timezone"] == "Asia/Yekaterinburg"
    assert "holidays" in calendars[night["calendar"]]
    assert policies["Always on"]["calendar"] == "24x7"
    assert "No targets" in run.stdout.split("calendars:")[0]  # named in the comment
    assert "Telegram Sales" in run.stdout.split("calendars:")[0]

    # Pasted into a config with a connectors section, it passes check-config.
    pasted = tmp_path / "slamon.yaml"
    pasted.write_text(run.stdout + yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'y.db'}",
                                                   "connectors": connectors}))  # fmt: skip
    check = slamon("check-config", "--config", str(pasted))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "4 policies" in check.stdout
    assert CODE not in run.stdout + run.stderr + check.stdout + check.stderr


def test_suggest_policies_with_oauth_keeps_the_rotated_refresh_token(fake, url, tmp_path):
    fake.line("Support", first_answer=600)
    connectors = [{"name": "bx", "type": "bitrix24", "url": url, "client_id": CLIENT_ID,
                   "client_secret": CLIENT_SECRET, "refresh_token": "refresh-0",
                   "oauth_url": f"{url}/oauth/token/"}]  # fmt: skip
    config = tmp_path / "slamon.yaml"
    config.write_text(yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'x.db'}",
                                      "connectors": connectors}))  # fmt: skip
    first = slamon("suggest-policies", "--connector", "bx", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert fake.refreshes == 1 and fake.refresh_token != "refresh-0"  # "refresh-0" is spent
    fake.expire()
    again = slamon("suggest-policies", "--connector", "bx", "--config", str(config))
    assert again.returncode == 0, again.stderr  # with the stored, rotated token
    assert again.stdout == first.stdout and fake.refreshes == 2
    sync = slamon("sync", "--once", "--config", str(config))  # the monitor's sync goes on
    assert sync.returncode == 0, sync.stdout + sync.stderr
    for run in (first, again, sync):
        assert fake.refresh_token not in run.stdout + run.stderr
        assert CLIENT_SECRET not in run.stdout + run.stderr


def test_suggest_policies_from_an_unreachable_portal_fails_without_the_code(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    connectors = [
        {"name": "bx", "type": "bitrix24", "url": f"http://127.0.0.1:{port}/rest/1/{CODE}/"}
    ]
    config = tmp_path / "slamon.yaml"
    config.write_text(yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'x.db'}",
                                      "connectors": connectors}))  # fmt: skip
    run = slamon("suggest-policies", "--connector", "bx", "--config", str(config))
    assert run.returncode == 1
    assert "bx:" in run.stderr and "ConnectionError" in run.stderr
    assert CODE not in run.stderr + run.stdout
