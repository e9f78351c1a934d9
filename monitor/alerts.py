"""Per-ticket alerts: one Alertmanager alert for every running clock that is at risk or
breached, pushed to Alertmanager's v2 API the way Prometheus pushes its own alerts.

Every active alert is re-sent on a fixed cadence with ``endsAt`` a few cadences ahead, so
Alertmanager neither resolves it in between nor loses it for long when it restarts (the
next re-send brings it back). An alert whose clock stopped, or left its state (at risk ->
breached), is sent with ``endsAt`` = now, and re-sent so for a while. Changes go out
within a second: the ticker and the sync loop wake the pusher after they commit, and it
looks at the stored deadlines once a second anyway (at-risk instants pass with no event).
A failed push is logged and counted and retried later; it never holds up syncs or the
ticker, which only set an event."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import or_, select

from monitor.counters import Tally, read
from monitor.models import ClockRow, DbSession, Ticket, db
from monitor.queries import iso, live_state
from monitor.secrets import Redactor

if TYPE_CHECKING:
    from flask import Flask

    from monitor.config import AlertmanagerSpec

log = logging.getLogger("slamon.alerts")

RESEND = 60.0  # seconds between re-sends of every alert (Prometheus' resend delay)
LAPSE = 4  # endsAt = now + LAPSE x RESEND: survives missed re-sends, not a dead slamon
RESOLVED_FOR = 3  # resolved alerts are re-sent for this many re-send intervals
CHECK = 1.0  # seconds between looks at the stored deadlines
TIMEOUT = 5.0
PUSHES = "slamon_alertmanager_pushes_total"
ALERTS = {
    "breached": ("SlaBreached", "critical"),
    "at_risk": ("SlaAtRisk", "warning"),
}

Key = tuple[tuple[str, str], ...]


@dataclass
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts: float
    link: str | None
    ends: float | None = None  # set once resolved
    until: float = 0.0  # resolved: re-sent until then

    def same(self, other: Alert) -> bool:
        return (self.annotations, self.starts, self.link) == (
            other.annotations,
            other.starts,
            other.link,
        )

    def wire(self, ends: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": _rfc3339(min(self.starts, ends)),
            "endsAt": _rfc3339(ends),
        }
        if self.link:
            out["generatorURL"] = self.link
        return out


class AlertPusher:
    """Owns what slamon has told Alertmanager; runs in its own thread (``start``)."""

    def __init__(
        self,
        app: Flask,
        spec: AlertmanagerSpec,
        redact: Redactor,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        wall: Callable[[], float] = time.time,
        resend: float = RESEND,
        check: float = CHECK,
    ) -> None:
        self.app = app
        self.template = spec.ticket_url
        self.endpoint = f"{spec.url.rstrip('/')}/api/v2/alerts"
        parts = urlsplit(spec.url)
        self.shown = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")
        self.redact = Redactor([*redact.secrets, parts.password or "", parts.username or ""])
        self.clock = clock  # the app's clock: which clocks are at risk or breached
        self.wall = wall  # Alertmanager's: endsAt must be real time
        self.resend = resend
        self.check = check
        self.http = requests.Session()
        self.active: dict[Key, Alert] = {}
        self.resolved: dict[Key, Alert] = {}
        self.dirty: set[Key] = set()  # changed since the last successful push
        self.last_full = float("-inf")  # monotonic time of the last successful full push
        self.failures = 0
        self.retry_at = 0.0
        self.woken = threading.Event()
        self.stopping = threading.Event()

    # -- what should be firing -----------------------------------------------------------

    def wanted(self, session: DbSession) -> dict[Key, Alert]:
        now = self.clock().timestamp()
        query = (
            select(ClockRow, Ticket.source_id, Ticket.url)
            .join(Ticket, Ticket.id == ClockRow.ticket_id)
            .where(
                ClockRow.state.in_(("on_track", "at_risk", "breached")),
                Ticket.removed.is_(False),
                or_(ClockRow.deadline < now, ClockRow.at_risk_at <= now),
            )
        )
        out: dict[Key, Alert] = {}
        for row, ticket_id, url in session.execute(query):
            state = live_state(row, now)
            if state in ALERTS:
                alert = self._alert(row, state, ticket_id, url)
                out[tuple(sorted(alert.labels.items()))] = alert
        return out

    def _alert(self, row: ClockRow, state: str, ticket_id: str, url: str) -> Alert:
        name, severity = ALERTS[state]
        labels = {
            "alertname": name,
            "severity": severity,
            "connector": row.connector,
            "queue": row.queue,
            "priority": row.priority,
            "policy": row.policy,
            "metric": row.metric,
            "ticket": ticket_id,
        }
        link = self.link(row.connector, ticket_id, url)
        deadline = iso(row.deadline) or ""
        what = "breached" if state == "breached" else "at risk"
        annotations = {
            "summary": f"{row.connector} ticket {ticket_id}: {row.metric} {what} "
            f"(policy {row.policy}, deadline {deadline})",
            "deadline": deadline,
            "state": state,
        }
        if link:
            annotations["ticket_url"] = link
        starts = row.deadline if state == "breached" else row.at_risk_at
        return Alert(labels, annotations, float(starts or row.started_at), link)

    def link(self, connector: str, ticket_id: str, url: str) -> str | None:
        if self.template:
            return self.template.format(id=quote(ticket_id, safe=""), connector=quote(connector))
        return url if url.startswith(("https://", "http://")) else None

    # -- one round -----------------------------------------------------------------------

    def push_once(self) -> bool | None:
        """Compare what should fire with what was sent and push what is due; True if a push
        went through, False if it failed, None if nothing was due."""
        with self.app.app_context():
            try:
                wanted = self.wanted(db.session)
            finally:
                db.session.rollback()
        wall = self.wall()
        for key, alert in wanted.items():
            old = self.active.get(key)
            if old is None or not old.same(alert):
                self.dirty.add(key)
            self.resolved.pop(key, None)  # firing again
        for key in self.active.keys() - wanted.keys():
            gone = self.active[key]
            gone.ends, gone.until = wall, wall + RESOLVED_FOR * self.resend
            self.resolved[key] = gone
            self.dirty.add(key)
        self.active = wanted
        for key in [k for k, a in self.resolved.items() if a.until < wall and k not in self.dirty]:
            del self.resolved[key]
        self.dirty &= self.active.keys() | self.resolved.keys()
        mono = time.monotonic()
        if mono < self.retry_at:
            return None
        full = mono - self.last_full >= self.resend
        keys = set(self.active) | set(self.resolved) if full else set(self.dirty)
        if not keys:
            return None
        ends = wall + LAPSE * self.resend
        body = [
            self.active[k].wire(ends) if k in self.active else self._resolved_wire(k)
            for k in sorted(keys)
        ]
        ok = self._post(body)
        if ok:
            self.dirty -= keys
            self.failures, self.retry_at = 0, 0.0
            if full:
                self.last_full = mono
        else:
            self.failures += 1
            self.retry_at = mono + min(self.resend, 2.0 ** (self.failures - 1))
        return ok

    def _resolved_wire(self, key: Key) -> dict[str, Any]:
        alert = self.resolved[key]
        assert alert.ends is not None
        return alert.wire(alert.ends)

    def _post(self, body: list[dict[str, Any]]) -> bool:
        try:
            answer = self.http.post(self.endpoint, json=body, timeout=TIMEOUT)
            problem = None if answer.ok else f"HTTP {answer.status_code}: {answer.text[:200]}"
        except requests.RequestException as exc:
            problem = type(exc).__name__
        self._count("ok" if problem is None else "error")
        if problem is None:
            if self.failures:
                log.info("alertmanager at %s reachable again", self.shown)
            return True
        log.error(
            "pushing %d alert(s) to alertmanager at %s failed: %s; retrying",
            len(body),
            self.shown,
            self.redact(problem.strip()),
        )
        return False

    def _count(self, result: str) -> None:
        try:
            with self.app.app_context():
                tally = Tally()
                tally.add(PUSHES, {"result": result})
                tally.flush(db.session)
                db.session.commit()
        except Exception as exc:  # the database may be busy: a lost count, not a lost alert
            log.debug("counting a push failed: %s", type(exc).__name__)

    # -- the thread ----------------------------------------------------------------------

    def poke(self) -> None:
        """Look now (clocks changed, or a breach was counted)."""
        self.woken.set()

    def start(self, stopping: threading.Event) -> threading.Thread:
        self.stopping = stopping
        thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.woken.clear()
            try:
                self.push_once()
            except Exception as exc:  # the database may be busy; the next round catches up
                log.warning("alert round failed: %s", type(exc).__name__)
                log.debug("%s", self.redact(traceback.format_exc()))
            self.woken.wait(self.check)


class PushMetrics(Collector):
    """``slamon_alertmanager_pushes_total{result}``, from the stored counter."""

    def __init__(self, session_factory: Callable[[], Any]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            PUSHES.removesuffix("_total"),
            "Pushes of per-ticket alerts to Alertmanager, by result (ok or error).",
            labels=["result"],
        )
        with self.session_factory() as session:
            for _, labels, value in read(session, PUSHES):
                family.add_metric([labels.get("result", "")], value)
        yield family


def _rfc3339(at: float) -> str:
    stamp = dt.datetime.fromtimestamp(at, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
