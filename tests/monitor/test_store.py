"""Storing batches: one transaction with the cursor, idempotent replays, counters that
survive restarts, and states that follow the clock with no event in between. Every test
runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from monitor.models import ClockRow, ConnectorState, EventRow, Ticket, db
from tests.monitor.conftest import T0, make_app, write_config
from tests.monitor.scrape import scrape, value
from tests.monitor.tickets import at, batch, rating, reply, solve, ticket


def counts(app):
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(Ticket)),
            db.session.scalar(select(func.count()).select_from(EventRow)),
        )


def test_batch_and_cursor_are_stored_together(app):
    source = app.extensions["slamon"].connectors["desk"]
    source.pending = [batch(ticket("1", T0), ticket("2", at(T0, 5)), cursor=7)]
    assert app.extensions["slamon"].scheduler.sync_once("desk")
    assert counts(app) == (2, 4)
    with app.app_context():
        state = db.session.get(ConnectorState, "desk")
        assert state.cursor == {"page": 7} and state.up
        clocks = db.session.scalars(select(ClockRow).where(ClockRow.metric == "first_response"))
        assert {c.state for c in clocks} == {"on_track"}


def test_the_same_batch_twice_changes_nothing(app, clock):
    source = app.extensions["slamon"].connectors["desk"]
    history = ticket(
        "1", T0, reply("1", at(T0, 20)), solve("1", at(T0, 30)), rating("1", at(T0, 40), "csat", 5)
    )
    clock.advance(hours=1)
    source.pending = [batch(history)]
    app.extensions["slamon"].scheduler.sync_once("desk")
    first = scrape(app.test_client())
    source.pending = [batch(history, cursor=2)]
    app.extensions["slamon"].scheduler.sync_once("desk")
    again = scrape(app.test_client())
    assert counts(app) == (1, 5)
    expected = {
        "helpdesk_tickets_created_total": 1,
        "helpdesk_tickets_solved_total": 1,
        "helpdesk_sla_completed_total": 2,  # first response and resolution
        "helpdesk_response_seconds_count": 1,
        "helpdesk_resolution_seconds_count": 1,
        "helpdesk_satisfaction_responses_total": 1,
    }
    for name, count in expected.items():
        assert value(first, name) == value(again, name) == count, name
    assert (
        value(again, "helpdesk_sla_completed_total", metric="first_response", result="achieved")
        == 1
    )
    assert value(again, "helpdesk_response_seconds_sum", metric="first_response") == 20 * 60


def test_counters_survive_a_restart(tmp_path, database, clock):
    path = write_config(tmp_path, database)
    app = make_app(path, clock)
    source = app.extensions["slamon"].connectors["desk"]
    source.pending = [
        batch(ticket("1", T0, priority="urgent"), ticket("2", T0, reply("2", at(T0, 10))))
    ]
    clock.advance(minutes=15)
    app.extensions["slamon"].scheduler.sync_once("desk")
    clock.advance(minutes=45)  # ticket 1 breaches its 30m first response
    app.extensions["slamon"].scheduler.tick()
    before = scrape(app.test_client())
    assert value(before, "helpdesk_sla_breaches_total", metric="first_response") == 1
    restarted = make_app(path, clock)  # a new process on the same database
    after = scrape(restarted.test_client())
    for name in ("helpdesk_tickets_created_total", "helpdesk_sla_breaches_total",
                 "helpdesk_sla_completed_total", "slamon_connector_polls_total"):  # fmt: skip
        assert value(after, name) == value(before, name) > 0, name


def test_a_deadline_passing_shows_at_once(app, clock):
    source = app.extensions["slamon"].connectors["desk"]
    source.pending = [batch(ticket("1", T0, priority="urgent"))]
    app.extensions["slamon"].scheduler.sync_once("desk")
    client = app.test_client()
    clock.advance(minutes=23)  # 80% of 30m is 24m
    text = scrape(client)
    assert value(text, "helpdesk_sla_clocks", metric="first_response", state="on_track") == 1
    assert value(text, "helpdesk_sla_next_deadline_seconds", metric="first_response") == 7 * 60
    clock.advance(minutes=1)
    assert (
        value(scrape(client), "helpdesk_sla_clocks", metric="first_response", state="at_risk") == 1
    )
    clock.advance(minutes=6)  # exactly at the deadline: not yet breached
    assert (
        value(scrape(client), "helpdesk_sla_clocks", metric="first_response", state="at_risk") == 1
    )
    clock.advance(seconds=1)  # no event, no evaluation, no tick: the scrape still knows
    text = scrape(client)
    assert value(text, "helpdesk_sla_clocks", metric="first_response", state="breached") == 1
    assert value(text, "helpdesk_sla_breaches_total", metric="first_response") == 1
    app.extensions["slamon"].scheduler.tick()  # counted for good, and only once
    assert value(scrape(client), "helpdesk_sla_breaches_total", metric="first_response") == 1
    found = client.get("/api/v1/tickets?state=breached").get_json()
    assert [t["id"] for t in found["tickets"]] == ["1"]


def test_a_failing_connector_beside_a_working_one(app):
    ext = app.extensions["slamon"]
    ext.connectors["other"].failure = RuntimeError("upstream said 502")
    ext.connectors["desk"].pending = [batch(ticket("1", T0))]
    assert not ext.scheduler.sync_once("other")
    assert ext.scheduler.sync_once("desk")
    text = scrape(app.test_client())
    assert value(text, "slamon_connector_up", connector="other") == 0
    assert value(text, "slamon_connector_up", connector="desk") == 1
    assert value(text, "slamon_connector_polls_total", connector="other", result="error") == 1
    assert value(text, "helpdesk_tickets_open", connector="desk") == 1
    listed = {
        c["name"]: c for c in app.test_client().get("/api/v1/connectors").get_json()["connectors"]
    }
    assert "502" in listed["other"]["last_error"] and listed["desk"]["last_error"] is None


def test_events_stamped_ahead_of_our_clock_still_count(app, clock):
    # the helpdesk's clock runs 30 s ahead of ours: its reply must stop the clock now
    source = app.extensions["slamon"].connectors["desk"]
    source.pending = [batch(ticket("1", T0, reply("1", at(T0, 10.5)), priority="urgent"))]
    clock.advance(minutes=10)
    app.extensions["slamon"].scheduler.sync_once("desk")
    found = app.test_client().get("/api/v1/tickets/desk/1").get_json()
    first = next(c for c in found["clocks"] if c["metric"] == "first_response")
    assert first["state"] == "achieved" and first["stopped_at"] == "2026-11-23T09:10:30Z"
