"""The command line as people run it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from monitor.reports import clock_row
from rules import evaluate
from tests.monitor.conftest import T0, make_app, write_config
from tests.monitor.tickets import at, batch, reply, solve, ticket


def slamon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True, env=env
    )


BAD = {
    "yaml": ("policies:\n  - name: x\n    targets: {first_response: 4h\n", 4),  # where it ends
    "unknown-key": ("server:\n  listen: 127.0.0.1:9181\n  color: blue\n", 3),
    "duration": ("policies:\n  - name: x\n    targets:\n      resolution: 3 days\n", 4),
    "listen": ("server:\n  listen: nowhere\n", 2),
    "env": ("server:\n  api_token: ${SLAMON_TEST_UNSET_VARIABLE}\n", 2),
    "calendar": (
        "policies:\n  - name: x\n    calendar: office\n    targets: {resolution: 1d}\n",
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_file_and_line(tmp_path, case):
    text, line = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    for command in (["check-config"], ["sync", "--once"], ["clocks"], ["run"]):
        run = slamon(*command, "--config", str(path))
        assert run.returncode == 2, (command, run.stderr)
        assert "Traceback" not in run.stderr
        first = run.stderr.splitlines()[0]
        assert re.match(rf"^{re.escape(str(path))}:{line}: ", first), (command, first)


def test_missing_config_file(tmp_path):
    run = slamon("check-config", "--config", str(tmp_path / "nope.yaml"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"{tmp_path / 'nope.yaml'}:")


def test_clocks_at_an_instant_match_the_engine(tmp_path, clock):
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    app = make_app(path, clock)
    histories = [
        ticket("1", T0, reply("1", at(T0, 20)), solve("1", at(T0, 90))),
        ticket("2", at(T0, 5), priority="urgent"),
        ticket("3", at(T0, 10), reply("3", at(T0, 300)), queue="billing"),
    ]
    clock.advance(hours=8)
    app.extensions["slamon"].connectors["desk"].pending = [batch(*histories)]
    assert app.extensions["slamon"].scheduler.sync_once("desk")
    rules = app.extensions["slamon"].rules
    for when in (at(T0, 15), at(T0, 60), at(T0, 301)):
        run = slamon("clocks", "--at", when.isoformat(), "--json", "--config", str(path))
        assert run.returncode == 0, run.stderr
        expected = [
            clock_row("desk", h.ticket, c)
            for h in histories
            for c in evaluate("desk", h.events, rules, when).clocks
            if c.state != "cancelled"
        ]
        assert sorted(json.loads(run.stdout), key=str) == sorted(expected, key=str)
        assert expected  # the comparison is about something
    table = slamon("clocks", "--at", at(T0, 60).isoformat(), "--config", str(path))
    assert table.returncode == 0 and "first_response" in table.stdout and "breached" in table.stdout


def test_sync_once_stores_and_exits(tmp_path):
    path = tmp_path / "slamon.yaml"
    path.write_text(
        f"database: sqlite:///{tmp_path / 'db.sqlite'}\n"
        "policies:\n  - name: all\n    targets: {first_response: 1h, resolution: 1d}\n"
        "connectors:\n  - name: demo\n    type: demo\n    backfill: 6h\n"
    )
    run = slamon("sync", "--once", "--config", str(path))
    assert run.returncode == 0, run.stderr
    listed = slamon("clocks", "--json", "--config", str(path))
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) > 0
    unknown = slamon("sync", "--once", "--connector", "nope", "--config", str(path))
    assert unknown.returncode == 2 and "no connector named 'nope'" in unknown.stderr
