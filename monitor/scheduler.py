"""The sync loop: every connector polls on its own interval in its own thread, stores each
batch with its cursor, and backs off when it fails; one failing connector never stops the
others. A ticker counts breaches as their deadlines pass."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Flask

from connectors.base import Connector, FatalError, RetriableError
from monitor.counters import POLL_BUCKETS, Tally
from monitor.evaluator import count_due_breaches
from monitor.ingest import store_batch, store_changes
from monitor.models import ConnectorState, db
from monitor.secrets import Redactor

if TYPE_CHECKING:
    from monitor.alerts import AlertPusher

log = logging.getLogger("slamon.sync")
BACKOFF_FIRST, BACKOFF_CAP = 5.0, 600.0
WATCH_TIMEOUT = 25 * 60.0  # an idle watch is renewed this often


@dataclass
class Job:
    connector: Connector
    interval: float
    failures: int = 0
    fatal: bool = False
    poke: threading.Event = field(default_factory=threading.Event)
    resync: bool = False  # sync before the interval is up
    wanted: set[str] = field(default_factory=set)  # tickets to re-read at once
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_wanted(self) -> list[str]:
        with self.lock:
            wanted, self.wanted = sorted(self.wanted), set()
        return wanted


class Scheduler:
    def __init__(
        self,
        app: Flask,
        jobs: dict[str, Job],
        redact: Redactor,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.app = app
        self.jobs = jobs
        self.redact = redact
        self.clock = clock
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.alerts: AlertPusher | None = None  # per-ticket alerts, when configured

    # -- one sync ------------------------------------------------------------------------

    def sync_once(self, name: str, progress: Callable[[int], None] | None = None) -> bool:
        """One incremental sync of a connector to the end of its stream; False if it failed.
        ``progress`` hears the running count of changes stored."""
        job = self.jobs[name]
        began = time.monotonic()
        ok, error = True, None
        with self.app.app_context():
            rules = self.app.extensions["slamon"].rules
            try:
                state = db.session.get(ConnectorState, name)
                cursor = state.cursor if state else None
                db.session.rollback()
                stored = 0
                for batch in job.connector.sync(cursor, self.stopping):
                    stored += store_batch(db.session, name, batch, rules, self.clock())
                    self._clocks_changed()
                    if progress is not None:
                        progress(stored)
                    for note in batch.notes:
                        log.warning("%s: %s", name, self.redact(note))
                    if self.stopping.is_set():
                        break
                    if job.wanted:  # a webhook came in during a long sync
                        self.fetch_wanted(name)
            except FatalError as exc:
                ok, error, job.fatal = False, f"stopped: {exc}", True
            except RetriableError as exc:
                ok, error = False, str(exc)
            except Exception as exc:  # a bug or an odd answer: report, keep the process alive
                ok, error = False, f"{type(exc).__name__}: {exc}"
                log.debug("%s: sync failed\n%s", name, self.redact(traceback.format_exc()))
            finally:
                db.session.rollback()
            self._record(name, ok, error, time.monotonic() - began)
        job.failures = 0 if ok else job.failures + 1
        return ok

    def fetch_wanted(self, name: str) -> int:
        """Re-read the tickets webhooks named, store them (the cursor stays where it is)
        and return how many were stored. When the connector cannot read one ticket alone,
        or the read fails, an early incremental sync does the work instead."""
        job = self.jobs[name]
        tickets = job.take_wanted()
        if not tickets:
            return 0
        with self.app.app_context():
            try:
                changes = list(job.connector.fetch_tickets(tickets, self.stopping))
                rules = self.app.extensions["slamon"].rules
                stored = store_changes(db.session, name, changes, rules, self.clock())
                self._clocks_changed()
                return stored
            except NotImplementedError:
                job.resync = True
            except Exception as exc:  # the sync that follows reports it
                failure = self.redact(f"{type(exc).__name__}: {exc}")
                log.warning("%s: re-reading tickets failed, syncing instead: %s", name, failure)
                job.resync = True
            finally:
                db.session.rollback()
        return 0

    def _record(self, name: str, ok: bool, error: str | None, seconds: float) -> None:
        state = db.session.get(ConnectorState, name)
        assert state is not None
        state.up = ok
        if ok:
            state.last_success = self.clock().timestamp()
            state.last_error = None
        else:
            state.last_error = self.redact(error or "failed")[:2000]
            log.error("connector %s failed: %s", name, state.last_error)
        tally = Tally()
        tally.add(
            "slamon_connector_polls_total", {"connector": name, "result": "ok" if ok else "error"}
        )
        tally.observe(
            "slamon_connector_poll_duration_seconds", {"connector": name}, seconds, POLL_BUCKETS
        )
        tally.flush(db.session)
        db.session.commit()

    def tick(self) -> None:
        """Count the breaches whose deadlines passed since the last tick."""
        with self.app.app_context():
            tally = Tally()
            breaches = count_due_breaches(db.session, self.clock(), tally)
            if breaches:
                tally.flush(db.session)
            db.session.commit()
        if breaches:
            self._clocks_changed()

    def _clocks_changed(self) -> None:
        if self.alerts is not None:
            self.alerts.poke()  # only sets an event: a slow Alertmanager never holds us up

    # -- threads -------------------------------------------------------------------------

    def start(self) -> None:
        for name in self.jobs:
            thread = threading.Thread(
                target=self._loop, args=(name,), name=f"sync-{name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        for name in self.jobs:
            watcher = threading.Thread(
                target=self._watch, args=(name,), name=f"watch-{name}", daemon=True
            )
            watcher.start()
            self.threads.append(watcher)
        ticker = threading.Thread(target=self._ticker, name="ticker", daemon=True)
        ticker.start()
        self.threads.append(ticker)
        if self.alerts is not None:
            self.threads.append(self.alerts.start(self.stopping))

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every loop to stop after the page in hand, and wait for them."""
        self.stopping.set()
        for job in self.jobs.values():
            job.poke.set()
        if self.alerts is not None:
            self.alerts.poke()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def poke(self, name: str) -> None:
        """Sync this connector now (a webhook said something changed)."""
        job = self.jobs[name]
        job.resync = True
        job.poke.set()

    def fetch(self, name: str, tickets: Iterable[str]) -> None:
        """Re-read these tickets now (a webhook named them), without waiting for a sync."""
        job = self.jobs[name]
        with job.lock:
            job.wanted.update(tickets)
        job.poke.set()

    def _loop(self, name: str) -> None:
        job = self.jobs[name]
        due = 0.0
        while not self.stopping.is_set() and not job.fatal:
            job.poke.clear()
            self.fetch_wanted(name)
            if job.resync or time.monotonic() >= due:
                job.resync = False
                self.sync_once(name)
                due = time.monotonic() + self._delay(job)
            job.poke.wait(max(0.0, due - time.monotonic()))

    def _watch(self, name: str) -> None:
        """Sync as soon as the source pushes word of a change (IMAP IDLE); ends at once
        for sources that push nothing."""
        job, failures = self.jobs[name], 0
        while not self.stopping.is_set() and not job.fatal:
            try:
                changed = job.connector.wait_for_change(self.stopping, WATCH_TIMEOUT)
            except FatalError:
                return  # the sync loop reports it and stops the connector
            except Exception as exc:  # a dropped connection: wait, then watch again
                failures += 1
                log.debug("%s: watching failed: %s", name, self.redact(str(exc)))
                self.stopping.wait(min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** (failures - 1)))
                continue
            if changed is None:
                return
            failures = 0
            if changed:
                self.poke(name)

    def _delay(self, job: Job) -> float:
        if job.failures == 0:
            return float(job.interval)
        backoff = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** (job.failures - 1))
        return max(float(job.interval), backoff * random.uniform(0.5, 1.0))

    def _ticker(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.tick()
            except Exception:  # the database may be busy; the next tick catches up
                log.debug("tick failed: %s", self.redact(traceback.format_exc()))
