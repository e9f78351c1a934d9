"""Fixtures: the app on a temporary database (SQLite, or a real PostgreSQL the suite
starts), a scripted source, and a clock the test moves."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Batch, Connector, FatalError, RetriableError, TicketChange
from monitor import create_app, register_connectors
from monitor.config import load_config
from monitor.database import upgrade
from tests.services import postgres

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)  # a Monday

CONFIG = """\
database: {database}
server:
  listen: 127.0.0.1:9181
{server}
policies:
  - name: urgent
    match: {{priority: [urgent]}}
    targets: {{first_response: 30m, next_response: 1h, resolution: 4h}}
  - name: standard
    targets: {{first_response: 4h, next_response: 8h, resolution: 3d}}
    warning: 15m
connectors:
  - name: desk
    type: demo
  - name: other
    type: demo
"""


class Clock:
    """The instant the app believes it is."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class Scripted(Connector):
    """A source that yields the batches a test gives it, or fails as told."""

    type = "scripted"

    def __init__(self, name: str) -> None:
        super().__init__(name, {})
        self.pending: list[Batch] = []
        self.failure: Exception | None = None
        self.calls = 0

    def sync(self, cursor: Any, stop: threading.Event) -> Iterator[Batch]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        while self.pending:
            yield self.pending.pop(0)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'slamon.db'}"
    else:
        with postgres() as url:
            yield url


@pytest.fixture
def clock() -> Clock:
    return Clock()


def write_config(tmp_path: Path, database: str, server: str = "") -> Path:
    path = tmp_path / "slamon.yaml"
    path.write_text(CONFIG.format(database=database, server=server))
    return path


def make_app(config_path: Path, clock: Clock, sources: dict[str, Scripted] | None = None) -> Any:
    config = load_config(config_path, now=T0)
    sources = (
        sources if sources is not None else {c.name: Scripted(c.name) for c in config.connectors}
    )
    app = create_app(config, clock=clock, connectors=sources)
    upgrade(app)
    register_connectors(app)
    return app


@pytest.fixture
def app(tmp_path: Path, database: str, clock: Clock) -> Any:
    return make_app(write_config(tmp_path, database), clock)


__all__ = ["T0", "Clock", "FatalError", "RetriableError", "Scripted", "TicketChange"]
