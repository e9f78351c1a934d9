"""The JSON API: filters, ordering, one ticket's timeline, and errors as JSON."""

from __future__ import annotations

from tests.monitor.conftest import T0
from tests.monitor.tickets import at, batch, reply, ticket


def fill(app, clock):
    source = app.extensions["slamon"].connectors["desk"]
    source.pending = [
        batch(
            ticket("late", T0, priority="urgent"),  # breached: 30m first response
            ticket("later", at(T0, 20), priority="urgent"),
            ticket("calm", at(T0, 40)),  # standard: 4h
            ticket("done", T0, reply("done", at(T0, 5))),
        )
    ]
    clock.advance(minutes=45)
    assert app.extensions["slamon"].scheduler.sync_once("desk")


def test_tickets_by_state_nearest_deadline_first(app, clock):
    fill(app, clock)
    client = app.test_client()
    breached = client.get("/api/v1/tickets?state=breached").get_json()["tickets"]
    assert [t["id"] for t in breached] == ["late"]
    at_risk = client.get("/api/v1/tickets?state=at_risk").get_json()["tickets"]
    assert [t["id"] for t in at_risk] == ["later"]  # 80% of 30m used at 09:44
    assert breached[0]["url"] == "https://help.example/tickets/late"
    clock_ = breached[0]["clocks"][0]
    assert clock_["state"] == "breached" and clock_["deadline"] == "2026-11-23T09:30:00Z"
    everything = client.get("/api/v1/tickets").get_json()["tickets"]
    assert [t["id"] for t in everything][:3] == ["late", "later", "calm"]
    urgent_fr = client.get("/api/v1/tickets?metric=first_response&policy=standard").get_json()
    assert [t["id"] for t in urgent_fr["tickets"]] == ["calm"]
    assert client.get("/api/v1/tickets?limit=1").get_json()["count"] == 1
    assert client.get("/api/v1/tickets?connector=other").get_json()["tickets"] == []


def test_one_ticket_with_its_timeline(app, clock):
    fill(app, clock)
    found = app.test_client().get("/api/v1/tickets/desk/done").get_json()
    assert found["id"] == "done" and found["priority"] == "normal"
    assert [e["what"] for e in found["timeline"]] == [
        "created by customer",
        "public message from customer",
        "public message from agent",
    ]
    first = next(c for c in found["clocks"] if c["metric"] == "first_response")
    assert first["state"] == "achieved" and first["elapsed_seconds"] == 300


def test_errors_are_json(app):
    client = app.test_client()
    for path, status in (
        ("/api/v1/tickets?state=sleeping", 400),
        ("/api/v1/tickets?metric=speed", 400),
        ("/api/v1/tickets?limit=none", 400),
        ("/api/v1/tickets?limit=0", 400),
        ("/api/v1/tickets/desk/nope", 404),
        ("/api/v1/nothing", 404),
    ):
        response = client.get(path)
        assert response.status_code == status, path
        body = response.get_json()
        assert set(body) == {"error", "detail"} and body["error"], path
    hook = client.post("/api/v1/webhooks/desk", data=b"{}")
    assert (
        hook.status_code == 404 and hook.get_json()["error"] == "this connector takes no webhooks"
    )
    assert client.post("/api/v1/webhooks/ghost").status_code == 404


def test_a_failing_request_is_json_without_a_stack_trace(app, monkeypatch):
    import monitor.views_api as api

    def broken(*args, **kwargs):
        raise RuntimeError("database exploded at /secret/path")

    monkeypatch.setattr(api, "running_tickets", broken)
    response = app.test_client().get("/api/v1/tickets")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error", "detail": None}
    assert b"Traceback" not in response.data and b"secret" not in response.data
