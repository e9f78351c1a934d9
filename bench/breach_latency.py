"""How soon a breach shows, on /metrics and at Alertmanager, after the deadline passes.

slamon runs as in production minus gunicorn: ``create_app`` on SQLite in a temp dir, the
scheduler started (sync loop, the 1-second ticker, the alert pusher) and the app served
over HTTP by werkzeug on loopback. A real Alertmanager (Debian's prometheus-alertmanager,
tests/services.py) receives the pushes. A scripted source hands over tickets whose
first-response deadline (policy: 1 minute, 24x7) lies a few seconds ahead on the real wall
clock, one deadline every ``--spacing`` seconds. Two pollers, every 50 ms each, note when
(a) a scrape of /metrics shows ``helpdesk_sla_breaches_total`` reach k and
``helpdesk_sla_clocks{state="breached"}`` reach k, (b) Alertmanager's GET /api/v2/alerts
lists the ticket's ``SlaBreached`` alert. Latency = that instant minus the deadline.

Last line: ``breach latency: metrics <s> s, alert <s> s`` (medians over the tickets).
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository, not bench/

import argparse
import datetime as dt
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import WSGIRequestHandler, make_server

from connectors.base import Batch, Connector
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from tests.monitor.tickets import ticket
from tests.services import alertmanager, free_port

TARGET = 60  # seconds: the bench policy's first-response target
POLL = 0.05
CONFIG = """\
database: sqlite:///{db}
policies:
  - name: bench
    targets: {{first_response: {target}s}}
connectors:
  - name: bench
    type: demo
    interval: 1s
alertmanager:
  url: {am}
  ticket_url: https://help.example/tickets/{{id}}
"""
AM_CONFIG = """\
route:
  receiver: nowhere
  group_by: ['...']
receivers:
  - name: nowhere
"""


class Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class Handed(Connector):
    """A source that yields what the bench hands it, once."""

    type = "handed"

    def __init__(self, name: str) -> None:
        super().__init__(name, {})
        self.pending: list[Batch] = []

    def sync(self, cursor: Any, stop: threading.Event) -> Iterator[Batch]:
        while self.pending:
            yield self.pending.pop(0)


def breach_counts(url: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    total = breached = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "helpdesk_sla_breaches_total":
                total += s.value
            elif s.name == "helpdesk_sla_clocks" and s.labels.get("state") == "breached":
                breached += s.value
    return total, breached


def alerted(am: str) -> set[str]:
    with urllib.request.urlopen(f"{am}/api/v2/alerts", timeout=5) as answer:
        alerts = json.loads(answer.read())
    return {a["labels"]["ticket"] for a in alerts if a["labels"]["alertname"] == "SlaBreached"}


def measure(tickets: int, lead: float, spacing: float) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="slamon-bench-") as tmp, alertmanager(AM_CONFIG) as am:
        path = Path(tmp) / "slamon.yaml"
        path.write_text(CONFIG.format(db=Path(tmp) / "slamon.db", target=TARGET, am=am))
        source = Handed("bench")
        app = create_app(load_config(path), connectors={"bench": source})
        upgrade(app)
        register_connectors(app)
        port = free_port()
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{port}"

        first = time.time() + lead
        deadlines = [round(first + i * spacing, 3) for i in range(tickets)]
        changes = [
            ticket(str(i), dt.datetime.fromtimestamp(d - TARGET, dt.UTC))
            for i, d in enumerate(deadlines)
        ]
        source.pending = [Batch(changes=changes, cursor={"n": tickets}, done=True)]
        scheduler = app.extensions["slamon"].scheduler
        scheduler.start()
        shown: dict[int, float] = {}
        arrived: dict[str, float] = {}
        try:
            until = deadlines[-1] + 30
            while (len(shown) < tickets or len(arrived) < tickets) and time.time() < until:
                total, breached = breach_counts(url)
                seen = time.time()
                for k in range(1, int(min(total, breached)) + 1):
                    shown.setdefault(k, seen)
                at_am = alerted(am)
                seen = time.time()
                for number in at_am:
                    arrived.setdefault(number, seen)
                time.sleep(POLL)
        finally:
            scheduler.stop()
            server.shutdown()
        if len(shown) < tickets or len(arrived) < tickets:
            raise SystemExit(f"not all breaches seen: metrics {len(shown)}, alerts {len(arrived)}")
        metrics = [shown[i + 1] - d for i, d in enumerate(deadlines)]
        alerts = [arrived[str(i)] - d for i, d in enumerate(deadlines)]
        return metrics, alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=8)
    parser.add_argument("--lead", type=float, default=4.0, help="seconds to the first deadline")
    parser.add_argument("--spacing", type=float, default=1.7, help="seconds between deadlines")
    args = parser.parse_args()
    metrics, alerts = measure(args.tickets, args.lead, args.spacing)
    for i, (m, a) in enumerate(zip(metrics, alerts, strict=True)):
        print(f"ticket {i}: metrics {m:.2f} s, alert {a:.2f} s")
    print(f"max: metrics {max(metrics):.2f} s, alert {max(alerts):.2f} s")
    print(
        f"breach latency: metrics {statistics.median(metrics):.2f} s, "
        f"alert {statistics.median(alerts):.2f} s"
    )


if __name__ == "__main__":
    main()
