"""The SLA counters exist at 0 before they first count: Prometheus' increase() sees a
series go 0 -> 1, never the first breach of a series that is born at 1. Runs on SQLite and
on a real PostgreSQL."""

from __future__ import annotations

from tests.monitor.conftest import T0
from tests.monitor.scrape import samples, scrape
from tests.monitor.tickets import at, batch, reply, ticket

URGENT = {"connector": "desk", "queue": "support", "priority": "urgent", "policy": "urgent"}
SLA_COUNTERS = ("helpdesk_sla_breaches_total", "helpdesk_sla_completed_total")


def sla_counters(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {key: v for key, v in samples(text).items() if key[0] in SLA_COUNTERS}


def series(name: str, metric: str, **extra: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({**URGENT, "metric": metric, **extra}.items())


def test_sla_counters_start_at_zero_and_count_the_first_breach(app, clock):
    client = app.test_client()
    assert sla_counters(scrape(client)) == {}, "no clock, no series"

    app.extensions["slamon"].connectors["desk"].pending = [
        batch(ticket("1", T0, priority="urgent"))
    ]
    app.extensions["slamon"].scheduler.sync_once("desk")
    clock.advance(minutes=10)
    # Two running clocks (first response 30m, resolution 4h); no next_response clock yet.
    expected = {}
    for metric in ("first_response", "resolution"):
        expected[series("helpdesk_sla_breaches_total", metric)] = 0.0
        for result in ("achieved", "missed"):
            expected[series("helpdesk_sla_completed_total", metric, result=result)] = 0.0
    before = sla_counters(scrape(client))
    assert before == expected
    for name, labels in before:  # bounded: no ticket id, subject or person
        assert {k for k, _ in labels} <= {*URGENT, "metric", "result"}, (name, labels)

    clock.advance(minutes=20, seconds=1)  # the 30m first response deadline has passed
    at_breach = sla_counters(scrape(client))  # before any tick counted it
    assert at_breach == {**expected, series("helpdesk_sla_breaches_total", "first_response"): 1}
    app.extensions["slamon"].scheduler.tick()  # counted for good, still once
    assert sla_counters(scrape(client)) == at_breach

    # The late reply stops first_response (missed); its series stay, at their counts.
    app.extensions["slamon"].connectors["desk"].pending = [
        batch(ticket("1", T0, reply("1", at(T0, 40)), priority="urgent"), cursor=2)
    ]
    clock.advance(minutes=10)
    app.extensions["slamon"].scheduler.sync_once("desk")
    after = sla_counters(scrape(client))
    missed = series("helpdesk_sla_completed_total", "first_response", result="missed")
    assert after == {**at_breach, missed: 1}
