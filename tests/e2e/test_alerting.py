"""Alerting end to end, every piece real but the helpdesk: a fake Zendesk on loopback, the
`slamon run` process (gunicorn, as users run it) pushing per-ticket alerts to a real
Alertmanager, and a real Prometheus scraping slamon with the shipped rule files and sending
its own alerts to the same Alertmanager, which hands everything to a webhook sink here.

One ticket's 20 s first-response target runs out a few seconds into the test: the shipped
SlamonSLABreached rule fires for the first breach of its series (the breach counter is
exported at 0 before it), the per-ticket SlaBreached alert arrives with the ticket's link
and deadline, and an agent's reply resolves it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.test_demo_run import slamon_command
from tests.fakes.serve import serving
from tests.fakes.zendesk import FakeZendesk
from tests.monitor.scrape import value
from tests.services import alertmanager, free_port, prometheus

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = (ROOT / "grafana" / "prometheus" / "recording.yml",
              ROOT / "grafana" / "prometheus" / "alerts.yml")  # fmt: skip
EMAIL, TOKEN = "bot@acme.test", "zd-alerting-t0ken"
TARGET = 20  # seconds: the policy's first-response target
TICKET_URL = "https://acme.zendesk.com/agent/tickets/{id}"
WITHIN = 30.0  # seconds allowed for each step (each takes a few)
AM_CONFIG = """\
route:
  receiver: sink
  group_by: [alertname, ticket]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@dataclass
class Sink:
    """Alertmanager's webhook receiver: every notification it POSTs, in arrival order."""

    url: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Every alert notified so far whose labels include ``labels``."""
        with self.lock:
            sent = [a for n in self.notifications for a in n["alerts"]]
        return [a for a in sent if labels.items() <= a["labels"].items()]


@contextlib.contextmanager
def webhook_sink() -> Iterator[Sink]:
    sink = Sink()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with sink.lock:
                sink.notifications.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sink.url = f"http://127.0.0.1:{server.server_port}/alerts"
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Slamon:
    """One `slamon run --config ... --listen ...` process, logging to ``log``."""

    def __init__(self, config: Path, workdir: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLAMON_")}
        env["PYTHONUNBUFFERED"] = "1"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*slamon_command(), "run", "--config", str(config),
                 "--listen", f"127.0.0.1:{self.port}"],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then whatever is left of its process group (gunicorn's worker)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def until(what: str, check: Callable[[], Any], slamon: Slamon, within: float = WITHIN) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and the log."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        if slamon.proc.poll() is not None:
            pytest.fail(f"slamon exited ({slamon.proc.returncode}) while waiting for {what}\n"
                        f"--- log tail ---\n{slamon.tail()}")  # fmt: skip
        try:
            last = check()
        except requests.RequestException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {within:.0f} s waiting for {what} (last: {last!r})\n"
                f"--- log tail ---\n{slamon.tail()}")  # fmt: skip


def write_config(path: Path, database: Path, zendesk: str, am: str) -> Path:
    config = {
        "database": f"sqlite:///{database}",
        "policies": [
            {"name": "fast", "calendar": "24x7", "targets": {"first_response": f"{TARGET}s"},
             "warning": "50%"},
        ],
        "connectors": [
            {"name": "zd", "type": "zendesk", "url": zendesk, "email": EMAIL, "token": TOKEN,
             "interval": "2s",
             "start": (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()},
        ],
        "alertmanager": {"url": am, "ticket_url": TICKET_URL},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    return list(answer.json()["data"]["result"])


def test_a_breach_alerts_through_prometheus_and_alertmanager_then_resolves(
    tmp_path: Path,
) -> None:
    fake = FakeZendesk(EMAIL, TOKEN)
    customer, agent = fake.user("Carla Customer"), fake.user("Anton Agent", role="agent")
    support = fake.group("Support")
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(webhook_sink())
        am = stack.enter_context(alertmanager(AM_CONFIG.format(url=sink.url)))
        zendesk = stack.enter_context(serving(fake.app))
        config = write_config(tmp_path / "slamon.yaml", tmp_path / "slamon.db", zendesk, am)
        slamon = Slamon(config, tmp_path, tmp_path / "slamon.log")
        stack.callback(slamon.stop)

        def metrics() -> str:
            return requests.get(f"{slamon.base}/metrics", timeout=5).text

        def polled() -> bool:
            return value(metrics(), "slamon_connector_up", connector="zd") == 1

        until("slamon's first successful poll", polled, slamon)
        prom = stack.enter_context(
            prometheus(RULE_FILES, [f"127.0.0.1:{slamon.port}"], am.removeprefix("http://"))
        )
        until("Prometheus scraping slamon",
              lambda: query(prom, 'up{job="slamon"} == 1'), slamon)  # fmt: skip

        # The ticket: its first response is due TARGET seconds from now (Zendesk stamps
        # whole seconds), at risk after half of that.
        created = dt.datetime.now(dt.UTC).replace(microsecond=0)
        with fake.lock:  # the fake serves from another thread meanwhile
            tid = fake.create(created, customer, subject="Printer on fire", group=support)
        due = created + dt.timedelta(seconds=TARGET)
        series = 'helpdesk_sla_breaches_total{connector="zd",metric="first_response"}'
        # Before its deadline, Prometheus has the ticket's breach series at 0: without
        # that, the first breach of a series would be invisible to increase().
        zero = until(
            "the breach counter scraped at 0 before the deadline",
            lambda: query(prom, f"{series} == 0"),
            slamon,
            within=(due - dt.datetime.now(dt.UTC)).total_seconds(),
        )
        labels = zero[0]["metric"]
        assert (labels["queue"], labels["priority"], labels["policy"]) == (
            "Support",
            "normal",
            "fast",
        ), labels
        assert "ticket" not in labels
        assert dt.datetime.now(dt.UTC) < due

        # At risk first, then breached: the per-ticket alerts.
        at_risk = until(
            "SlaAtRisk at the sink",
            lambda: sink.alerts(alertname="SlaAtRisk", ticket=str(tid)),
            slamon,
        )
        assert at_risk[0]["status"] == "firing"
        assert at_risk[0]["labels"]["severity"] == "warning"
        link = TICKET_URL.format(id=tid)
        breached = until(
            "SlaBreached at the sink",
            lambda: sink.alerts(alertname="SlaBreached", ticket=str(tid)),
            slamon,
        )
        alert = breached[0]
        assert alert["status"] == "firing"
        assert dt.datetime.now(dt.UTC) > due
        assert alert["labels"] == {
            "alertname": "SlaBreached", "severity": "critical", "connector": "zd",
            "queue": "Support", "priority": "normal", "policy": "fast",
            "metric": "first_response", "ticket": str(tid),
        }  # fmt: skip
        assert alert["annotations"]["ticket_url"] == link
        assert alert["annotations"]["deadline"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert alert["annotations"]["state"] == "breached"
        assert alert["generatorURL"] == link

        # The shipped rule sees the first breach of its series (0 -> 1) and fires.
        fired = until(
            "SlamonSLABreached at the sink",
            lambda: sink.alerts(alertname="SlamonSLABreached", metric="first_response"),
            slamon,
        )
        rule_alert = fired[0]
        assert rule_alert["status"] == "firing"
        assert rule_alert["labels"] == {
            "alertname": "SlamonSLABreached", "severity": "warning", "connector": "zd",
            "queue": "Support", "priority": "normal", "policy": "fast",
            "metric": "first_response",
        }  # fmt: skip
        annotations = rule_alert["annotations"]
        assert annotations["summary"] == "SLA breached: fast first_response in zd/Support"
        assert annotations["runbook_url"] == "docs/runbooks/SlamonSLABreached.md"
        assert (ROOT / annotations["runbook_url"]).is_file()
        # (its count is an extrapolated increase(): about 1, not exactly)
        wording = "normal ticket clock(s) of policy fast passed their first_response deadline"
        assert wording in annotations["description"], annotations
        assert rule_alert["generatorURL"].startswith(prom)

        # An agent's public reply; slamon's next poll stops the clock and resolves the alert.
        breaches = sink.alerts(alertname="SlaBreached", ticket=str(tid))
        assert {a["status"] for a in breaches} == {"firing"}
        with fake.lock:
            fake.reply(tid, dt.datetime.now(dt.UTC).replace(microsecond=0), agent)
        resolved = until(
            "SlaBreached resolved at the sink",
            lambda: [a for a in sink.alerts(alertname="SlaBreached", ticket=str(tid))
                     if a["status"] == "resolved"],
            slamon,
        )  # fmt: skip
        assert resolved[0]["annotations"]["ticket_url"] == link
        assert resolved[0]["endsAt"] > resolved[0]["startsAt"]
        text = metrics()
        done = {"connector": "zd", "metric": "first_response", "policy": "fast"}
        assert value(text, "helpdesk_sla_completed_total", **done, result="missed") == 1
        assert value(text, "helpdesk_sla_completed_total", **done, result="achieved") == 0
        assert value(text, "helpdesk_sla_breaches_total", **done) == 1
        assert "Traceback" not in slamon.log.read_text(errors="replace"), slamon.tail()
