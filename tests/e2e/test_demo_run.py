"""Issue 3, end to end: `slamon run --demo` as users start it, scraped the way Prometheus
scrapes it, checked by a real promtool, stopped with SIGTERM and started again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.monitor.scrape import samples, value

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)

READY_WITHIN = 90.0  # seconds for every family to show
STOP_WITHIN = 30.0  # seconds for a graceful exit after SIGTERM

# CONTRACT.md, "Metrics": every family and its type.
FAMILIES = {
    "helpdesk_tickets_open": "gauge",
    "helpdesk_tickets_created_total": "counter",
    "helpdesk_tickets_solved_total": "counter",
    "helpdesk_oldest_open_ticket_age_seconds": "gauge",
    "helpdesk_sla_clocks": "gauge",
    "helpdesk_sla_breaches_total": "counter",
    "helpdesk_sla_completed_total": "counter",
    "helpdesk_sla_next_deadline_seconds": "gauge",
    "helpdesk_response_seconds": "histogram",
    "helpdesk_resolution_seconds": "histogram",
    "helpdesk_satisfaction_responses_total": "counter",
    "slamon_connector_up": "gauge",
    "slamon_connector_last_success_timestamp_seconds": "gauge",
    "slamon_connector_lag_seconds": "gauge",
    "slamon_connector_polls_total": "counter",
    "slamon_connector_changes_total": "counter",
    "slamon_connector_poll_duration_seconds": "histogram",
    "slamon_build_info": "gauge",
}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def required_samples(family: str, kind: str) -> set[str]:
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return {family}  # counters are named with their _total already


def missing_families(text: str) -> list[str]:
    present = {name for name, _ in samples(text)}
    return [f for f, kind in FAMILIES.items() if not required_samples(f, kind) <= present]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slamon_command() -> list[str]:
    script = Path(sys.executable).parent / "slamon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


class Demo:
    """One `slamon run --demo` process in ``workdir``, logging to ``log``."""

    def __init__(self, workdir: Path, log: Path) -> None:
        self.workdir, self.log = workdir, log
        self.base = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLAMON_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*slamon_command(), "run", "--demo", "--listen", f"127.0.0.1:{port}"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the finally can end it all
            )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.base + path, timeout=10, **kwargs)

    def until(self, what: str, check: Callable[[], Any], within: float = READY_WITHIN) -> Any:
        """Poll ``check`` until it returns something truthy; fail with ``what`` and the log."""
        deadline = time.monotonic() + within
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(
                    f"slamon exited with {self.proc.returncode} while waiting for {what}\n"
                    f"--- log tail ---\n{self.tail()}"
                )
            try:
                last = check()
            except requests.ConnectionError as exc:
                last = exc
            else:
                if last:  # a Missing list is falsy
                    return last
            time.sleep(0.2)
        pytest.fail(
            f"timed out after {within:.0f} s waiting for {what} (last: {last!r})\n"
            f"--- log tail ---\n{self.tail()}"
        )

    def stop(self) -> int:
        """SIGTERM, then the exit status; fails unless it exits within STOP_WITHIN."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"no exit within {STOP_WITHIN:.0f} s of SIGTERM\n--- log tail ---\n{self.tail()}"
            )

    def kill(self) -> None:
        """End whatever is left of the process group (gunicorn's worker too)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


class Missing(list[str]):
    """Families still missing from a scrape: falsy, so ``until`` keeps polling, and shown
    in its message when it gives up."""

    def __bool__(self) -> bool:
        return False


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    instance = Demo(workdir, tmp_path / "slamon.log")
    try:
        yield instance
    finally:
        instance.kill()


def complete_scrape(demo: Demo) -> str:
    """The first /metrics text in which every contract family has its samples."""
    demo.until("/healthz 200", lambda: demo.get("/healthz").status_code == 200)

    def scrape() -> Any:
        response = demo.get("/metrics")
        response.raise_for_status()
        missing = missing_families(response.text)
        return Missing(missing) if missing else response.text

    return str(demo.until("every metric family in /metrics", scrape))


def test_demo_run_end_to_end(demo: Demo) -> None:
    demo.start()
    text = complete_scrape(demo)
    assert (demo.workdir / "slamon-data").is_dir()

    # A real promtool reads it without a single lint finding.
    assert PROMTOOL is not None
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr

    assert demo.get("/readyz").status_code == 200

    connectors = demo.get("/api/v1/connectors").json()["connectors"]
    assert [(c["name"], c["type"]) for c in connectors] == [("demo", "demo")]
    assert connectors[0]["up"] is True, connectors
    assert connectors[0]["last_success"] and connectors[0]["last_error"] is None

    breached = demo.get("/api/v1/tickets", params={"state": "breached"})
    assert breached.status_code == 200
    tickets = breached.json()["tickets"]
    assert tickets, "the demo stages an outage, so something is breached"
    nearest = [min(c["deadline"] for c in t["clocks"]) for t in tickets]
    assert nearest == sorted(nearest), "nearest deadline first"
    for t in tickets:
        assert t["url"] and t["url"].startswith(("http://", "https://")), t
        assert t["clocks"] and {c["state"] for c in t["clocks"]} == {"breached"}, t

    om = demo.get("/metrics", headers={"Accept": OPENMETRICS})
    assert om.status_code == 200
    assert om.headers["Content-Type"].startswith("application/openmetrics-text"), om.headers
    assert om.text.endswith("# EOF\n")

    # SIGTERM: a graceful stop, status 0.
    before = demo.get("/metrics").text
    created = value(before, "helpdesk_tickets_created_total")
    polls = value(before, "slamon_connector_polls_total")
    assert created > 0 and polls > 0
    assert demo.stop() == 0, demo.tail()
    assert "Traceback" not in demo.log.read_text(errors="replace"), demo.tail()

    # Started again on the same working directory, the counters carry on from the database.
    restarted_at = time.time()
    demo.start()
    demo.until("/healthz 200 after the restart", lambda: demo.get("/healthz").status_code == 200)
    first = demo.get("/metrics").text
    assert value(first, "helpdesk_tickets_created_total") >= created
    assert value(first, "slamon_connector_polls_total") >= polls

    def polled_again() -> str | None:
        # Both conditions in the poll: the families of one scrape are separate reads, so
        # a poll committing mid-scrape may show in one and not yet in the other.
        text = demo.get("/metrics").text
        last = value(text, "slamon_connector_last_success_timestamp_seconds", connector="demo")
        resumed = last >= restarted_at and value(text, "slamon_connector_polls_total") > polls
        return text if resumed else None

    after = demo.until("a successful poll after the restart", polled_again)
    assert value(after, "helpdesk_tickets_created_total") >= created
    assert demo.stop() == 0, demo.tail()
    assert "Traceback" not in demo.log.read_text(errors="replace"), demo.tail()
