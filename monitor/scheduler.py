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
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask

from connectors.base import Connector, FatalError, RetriableError
from monitor.counters import POLL_BUCKETS, Tally
from monitor.evaluator import count_due_breaches
from monitor.ingest import store_batch
from monitor.models import ConnectorState, db
from monitor.secrets import Redactor

log = logging.getLogger("slamon.sync")
BACKOFF_FIRST, BACKOFF_CAP = 5.0, 600.0


@dataclass
class Job:
    connector: Connector
    interval: float
    failures: int = 0
    fatal: bool = False
    poke: threading.Event = field(default_factory=threading.Event)


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
                    if progress is not None:
                        progress(stored)
                    for note in batch.notes:
                        log.warning("%s: %s", name, self.redact(note))
                    if self.stopping.is_set():
                        break
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
            if count_due_breaches(db.session, self.clock(), tally):
                tally.flush(db.session)
            db.session.commit()

    # -- threads -------------------------------------------------------------------------

    def start(self) -> None:
        for name in self.jobs:
            thread = threading.Thread(
                target=self._loop, args=(name,), name=f"sync-{name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        ticker = threading.Thread(target=self._ticker, name="ticker", daemon=True)
        ticker.start()
        self.threads.append(ticker)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every loop to stop after the page in hand, and wait for them."""
        self.stopping.set()
        for job in self.jobs.values():
            job.poke.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def poke(self, name: str) -> None:
        """Sync this connector now (a webhook said something changed)."""
        self.jobs[name].poke.set()

    def _loop(self, name: str) -> None:
        job = self.jobs[name]
        while not self.stopping.is_set() and not job.fatal:
            job.poke.clear()
            self.sync_once(name)
            job.poke.wait(self._delay(job))

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
