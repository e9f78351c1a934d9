"""Per-ticket alerts against a real Alertmanager, whose webhook receiver is a sink served
by the test: a deadline passing on the app's clock is what makes an alert fire; answers,
restarts of Alertmanager and Alertmanager being down are followed through to the sink."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from tests.monitor.conftest import CONFIG, T0, Clock, make_app
from tests.monitor.scrape import scrape, value
from tests.monitor.tickets import at, batch, reply, ticket
from tests.services import alertmanager, free_port

LINK = "https://help.example/agent/{connector}/tickets/{id}"
AM_CONFIG = """\
route:
  receiver: sink
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: http://127.0.0.1:{port}/alerts
        send_resolved: true
"""


class Sink:
    """Alertmanager's webhook receiver: keeps every notification posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str, **labels: str) -> list[dict[str, Any]]:
        return [
            alert
            for body in list(self.bodies)
            for alert in body["alerts"]
            if alert["status"] == status and labels.items() <= alert["labels"].items()
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    served = Sink()
    yield served
    served.close()


def wait_for(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def am_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true", timeout=5) as answer:
        found: list[dict[str, Any]] = json.loads(answer.read())
    return found


def slamon(tmp_path: Path, clock: Clock, am_url: str) -> Any:
    path = tmp_path / "slamon.yaml"
    extra = f"alertmanager:\n  url: {am_url}\n  ticket_url: {LINK}\n"
    path.write_text(CONFIG.format(database=f"sqlite:///{tmp_path / 'slamon.db'}", server=extra))
    load_config(path)  # the example keys are valid config
    return make_app(path, clock)


@contextlib.contextmanager
def pushing(app: Any, resend: float = 2.0, check: float = 1.0) -> Iterator[Any]:
    """The pusher's thread, as ``Scheduler.start`` runs it (the sync loops stay off: the
    test syncs and ticks itself)."""
    pusher = app.extensions["slamon"].scheduler.alerts
    pusher.resend, pusher.check = resend, check
    stopping = threading.Event()
    thread = pusher.start(stopping)
    try:
        yield pusher
    finally:
        stopping.set()
        pusher.poke()
        thread.join(10)


def sync(app: Any, *changes: Any) -> None:
    ext = app.extensions["slamon"]
    ext.connectors["desk"].pending = [batch(*changes)]
    assert ext.scheduler.sync_once("desk")


def test_a_breach_fires_one_alert_with_the_ticket_and_its_link_and_an_answer_resolves_it(
    tmp_path, clock, sink
):
    with alertmanager(AM_CONFIG.format(port=sink.port)) as am:
        app = slamon(tmp_path, clock, am)
        # check=60: only the ticker's and the sync's wake-ups can make this test pass in time
        with pushing(app, resend=60.0, check=60.0):
            sync(app, ticket("1", T0, priority="urgent"), ticket("2", T0))
            clock.advance(minutes=31)  # urgent first response: 30m
            app.extensions["slamon"].scheduler.tick()
            fired = wait_for(lambda: sink.alerts("firing", ticket="1"), timeout=5)
            assert len(fired) == 1
            assert fired[0]["labels"] == {
                "alertname": "SlaBreached",
                "severity": "critical",
                "connector": "desk",
                "queue": "support",
                "priority": "urgent",
                "policy": "urgent",
                "metric": "first_response",
                "ticket": "1",
            }
            notes = fired[0]["annotations"]
            assert notes["ticket_url"] == "https://help.example/agent/desk/tickets/1"
            assert notes["deadline"] == "2026-11-23T09:30:00Z"
            assert notes["state"] == "breached"
            assert "first_response" in notes["summary"]
            assert fired[0]["startsAt"].startswith("2026-11-23T09:30:00")
            assert [a["labels"]["ticket"] for a in am_alerts(am)] == ["1"]

            clock.advance(minutes=2)
            sync(app, ticket("1", T0, reply("1", at(T0, 32)), priority="urgent"))
            ended = wait_for(lambda: sink.alerts("resolved", ticket="1"), timeout=5)
            assert ended[0]["labels"]["alertname"] == "SlaBreached"
            wait_for(lambda: not am_alerts(am), timeout=5)
            assert not sink.alerts("firing", ticket="2")
        text = scrape(app.test_client())
        assert value(text, "slamon_alertmanager_pushes_total", result="ok") >= 2
        assert value(text, "slamon_alertmanager_pushes_total", result="error") == 0


def test_an_at_risk_alert_turns_into_a_breached_one(tmp_path, clock, sink):
    with alertmanager(AM_CONFIG.format(port=sink.port)) as am:
        app = slamon(tmp_path, clock, am)
        with pushing(app, check=0.2):
            sync(app, ticket("7", T0))  # standard: first response 4h, warning 15m before
            clock.advance(hours=3, minutes=50)
            risk = wait_for(lambda: sink.alerts("firing", ticket="7"))
            assert [a["labels"]["alertname"] for a in risk] == ["SlaAtRisk"]
            assert risk[0]["labels"]["severity"] == "warning"
            assert risk[0]["annotations"]["state"] == "at_risk"
            clock.advance(minutes=11)
            breach = wait_for(lambda: sink.alerts("firing", ticket="7", alertname="SlaBreached"))
            assert breach[0]["annotations"]["deadline"] == "2026-11-23T13:00:00Z"
            wait_for(lambda: sink.alerts("resolved", ticket="7", alertname="SlaAtRisk"))
            wait_for(lambda: [a["labels"]["alertname"] for a in am_alerts(am)] == ["SlaBreached"])


def test_a_restarted_alertmanager_gets_the_alerts_back_at_the_next_resend(tmp_path, clock, sink):
    port = free_port()
    config = AM_CONFIG.format(port=sink.port)
    app = slamon(tmp_path, clock, f"http://127.0.0.1:{port}")
    sync(app, ticket("3", T0, priority="urgent"))
    clock.advance(hours=1)
    with contextlib.ExitStack() as first:
        am = first.enter_context(alertmanager(config, port=port))
        with pushing(app, resend=2.0):
            wait_for(lambda: am_alerts(am))
            notified = len(sink.alerts("firing", ticket="3"))
            first.close()  # killed: its alerts go with its storage
            with alertmanager(config, port=port) as again:  # same address, empty storage
                back = wait_for(lambda: am_alerts(again), timeout=10)
                assert [(a["labels"]["alertname"], a["labels"]["ticket"]) for a in back] == [
                    ("SlaBreached", "3")
                ]
                wait_for(lambda: len(sink.alerts("firing", ticket="3")) > notified)


def test_alertmanager_down_keeps_slamon_working_and_is_logged_and_counted(
    tmp_path, clock, sink, caplog
):
    port = free_port()
    secret = "am-s3cret-pw"
    app = slamon(tmp_path, clock, f"http://slamon:{secret}@127.0.0.1:{port}")
    caplog.set_level(logging.INFO, logger="slamon.alerts")
    with pushing(app, resend=2.0, check=0.2):
        sync(app, ticket("4", T0, priority="urgent"))
        clock.advance(minutes=45)
        began = time.monotonic()
        app.extensions["slamon"].scheduler.tick()
        assert time.monotonic() - began < 1.0
        client = app.test_client()
        wait_for(
            lambda: value(scrape(client), "slamon_alertmanager_pushes_total", result="error") >= 2
        )
        text = scrape(client)
        assert value(text, "helpdesk_sla_breaches_total", metric="first_response") == 1
        assert value(text, "helpdesk_sla_clocks", state="breached") == 1
        sync(app, ticket("5", T0))  # syncs go on
        failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        assert failures and f"127.0.0.1:{port}" in failures[0]
        assert all(secret not in r.getMessage() for r in caplog.records)
        assert secret not in text
        with alertmanager(AM_CONFIG.format(port=sink.port), port=port) as am:
            wait_for(lambda: [a["labels"]["ticket"] for a in am_alerts(am)] == ["4"])
            wait_for(lambda: sink.alerts("firing", ticket="4"))
        assert any("reachable again" in r.getMessage() for r in caplog.records)
