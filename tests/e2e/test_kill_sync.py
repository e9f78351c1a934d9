"""A kill -9 of ``slamon sync --once`` in the middle of a large sync, then a restart: every
ticket and event is stored exactly once, and the clocks are those of an uninterrupted run.

The fake Zendesk (tests/fakes/zendesk.py, a few thousand generated tickets with several
audits each) is served from this process on loopback; ``slamon`` runs as a subprocess, the
way people run it, against a SQLite file that the test only ever reads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes import scenario
from tests.fakes.serve import serving
from tests.fakes.zendesk import FakeZendesk

EMAIL, TOKEN = "bot@acme.test", "zd-kill-t0ken"
TICKETS = 3000
START = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)  # the generated tickets' first day
AT = START + dt.timedelta(days=40)  # after every generated event
MAPPED = ("status", "priority", "group_id", "type", "tags")  # field changes slamon keeps


@pytest.fixture(scope="module")
def fake() -> FakeZendesk:
    fake = FakeZendesk(EMAIL, TOKEN)
    fake.populate(TICKETS, seed=4)
    return fake


@pytest.fixture(scope="module")
def url(fake: FakeZendesk) -> Iterator[str]:
    with serving(fake.app) as base:
        yield base


def write_config(path: Path, database: Path, url: str) -> Path:
    config = {
        "database": f"sqlite:///{database}",
        **scenario.RULES,
        "connectors": [
            {"name": "zd", "type": "zendesk", "url": url, "email": EMAIL, "token": TOKEN,
             "start": (START - dt.timedelta(days=1)).isoformat()},
        ],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def slamon(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def count(database: Path, query: str) -> int | None:
    """One number from the database, read-only; None while it is not there yet."""
    if not database.exists():
        return None
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # no tables yet, or a moment's lock
        return None
    finally:
        con.close()


def expected_events(fake: FakeZendesk) -> int:
    """The normalized events the fake's history holds: a creation per ticket, every comment,
    every change of a field slamon keeps, every satisfaction answer."""
    total = 0
    for tid, audits in fake.audits.items():
        for audit in audits:
            items = audit["events"]
            total += any(item["type"] == "Create" for item in items)
            total += sum(item["type"] == "Comment" for item in items)
            total += sum(
                item["type"] == "Change" and item["field_name"] in MAPPED for item in items
            )
        rating = fake.tickets[tid]["satisfaction_rating"]
        total += rating is not None and rating["score"] in ("good", "bad")
    return total


def stored(database: Path) -> dict[str, object]:
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        q = con.execute
        out = {
            "tickets": q("SELECT COUNT(*) FROM tickets").fetchone()[0],
            "distinct tickets": q(
                "SELECT COUNT(*) FROM (SELECT DISTINCT connector, source_id FROM tickets)"
            ).fetchone()[0],
            "events": q("SELECT COUNT(*) FROM events").fetchone()[0],
            "duplicate events": q(
                "SELECT COUNT(*) FROM (SELECT ticket_id, source_id FROM events"
                " GROUP BY ticket_id, source_id HAVING COUNT(*) > 1)"
            ).fetchone()[0],
            "ids": set(
                q(
                    "SELECT t.source_id, e.source_id FROM events e"
                    " JOIN tickets t ON t.id = e.ticket_id"
                ).fetchall()
            ),
            "cursor": q("SELECT cursor FROM connectors WHERE name = 'zd'").fetchone()[0],
        }
    finally:
        con.close()
    return out


def clocks(config: Path, cwd: Path) -> list[dict[str, object]]:
    run = slamon("clocks", "--at", AT.isoformat(), "--json", "--config", str(config), cwd=cwd)
    assert run.returncode == 0, run.stderr
    return sorted(json.loads(run.stdout), key=lambda r: json.dumps(r, sort_keys=True))


def test_kill_9_mid_sync_then_restart(tmp_path: Path, fake: FakeZendesk, url: str) -> None:
    killed_db, whole_db = tmp_path / "killed.db", tmp_path / "whole.db"
    killed = write_config(tmp_path / "killed.yaml", killed_db, url)
    whole = write_config(tmp_path / "whole.yaml", whole_db, url)
    total = len(fake.tickets)

    # The sync to be killed; its output goes to files so that no pipe fills up.
    with open(tmp_path / "killed.out", "w") as out, open(tmp_path / "killed.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "sync", "--once", "--config", str(killed)],
            stdout=out,
            stderr=err,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            seen: int | None = None
            while proc.poll() is None and time.monotonic() < deadline:
                seen = count(killed_db, "SELECT COUNT(*) FROM tickets")
                if seen is not None and total // 3 <= seen < total:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.005)  # a poll interval, not a wait for anything
            returncode = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert returncode == -signal.SIGKILL, (
        f"not killed mid-sync (exit {returncode}, {seen} of {total} tickets stored):\n"
        + (tmp_path / "killed.err").read_text()[-2000:]
    )
    partial = count(killed_db, "SELECT COUNT(*) FROM tickets")
    assert partial is not None and 0 < partial < total, partial

    # The restart, and an uninterrupted sync into a second database.
    again = slamon("sync", "--once", "--config", str(killed), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    once = slamon("sync", "--once", "--config", str(whole), cwd=tmp_path)
    assert once.returncode == 0, once.stderr

    after_kill, uninterrupted = stored(killed_db), stored(whole_db)
    events = expected_events(fake)
    for result in (after_kill, uninterrupted):
        assert result["tickets"] == result["distinct tickets"] == total
        assert result["duplicate events"] == 0
        assert result["events"] == events
    assert after_kill["ids"] == uninterrupted["ids"]
    assert json.loads(str(after_kill["cursor"])) == json.loads(str(uninterrupted["cursor"]))

    restored = clocks(killed, tmp_path)
    assert restored == clocks(whole, tmp_path)
    assert len(restored) >= total  # every ticket has at least one clock to compare
