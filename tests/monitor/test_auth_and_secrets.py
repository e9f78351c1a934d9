"""Auth on and off, and secrets that appear nowhere: not in logs at debug level, /metrics,
any API response, the board, check-config output or error messages."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys

import pytest

from tests.monitor.conftest import T0, make_app, write_config
from tests.monitor.scrape import scrape
from tests.monitor.tickets import batch, ticket

TOKEN = "tok-3f9a8c7e1d2b4a6f"
METRICS_PASSWORD = "mpw-77c1e0b9a3d4"
SERVER = f"""  api_token: {TOKEN}
  metrics_basic_auth: {{username: prom, password: "{METRICS_PASSWORD}"}}"""


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@pytest.fixture
def secured(tmp_path, clock):
    return make_app(write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", SERVER), clock)


@pytest.mark.parametrize(
    "path", ["/", "/api/v1/tickets", "/api/v1/connectors", "/api/v1/tickets/desk/1"]
)
def test_api_and_board_need_the_token(secured, path):
    client = secured.test_client()
    refused = client.get(path)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "unauthorized"
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code in (200, 404)  # 404: no such ticket, but past the door
    assert client.get(path, headers=basic("anyone", TOKEN)).status_code in (200, 404)


def test_metrics_need_basic_auth_and_health_does_not(secured):
    client = secured.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=basic("prom", "nope")).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert client.get("/metrics", headers=basic("prom", METRICS_PASSWORD)).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_without_config_everything_is_open(app):
    client = app.test_client()
    for path in ("/", "/api/v1/tickets", "/api/v1/connectors", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_secrets_appear_nowhere(secured, caplog):
    caplog.set_level(logging.DEBUG)
    ext = secured.extensions["slamon"]
    ext.connectors["desk"].pending = [batch(ticket("1", T0, priority="urgent"))]
    ext.connectors["other"].failure = RuntimeError(f"upstream rejected token {TOKEN}")
    ext.scheduler.sync_once("desk")
    ext.scheduler.sync_once("other")
    client = secured.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen = [
        scrape(client, headers=basic("prom", METRICS_PASSWORD)),
        client.get("/", headers=auth).get_data(as_text=True),
        client.get("/api/v1/tickets", headers=auth).get_data(as_text=True),
        client.get("/api/v1/connectors", headers=auth).get_data(as_text=True),
        client.get("/api/v1/tickets/desk/1", headers=auth).get_data(as_text=True),
        client.get("/api/v1/nothing-here", headers=auth).get_data(as_text=True),
        caplog.text,
        repr(ext.config),
    ]
    assert "***" in seen[3]  # the connector's error was redacted, not dropped
    for text in seen:
        assert TOKEN not in text and METRICS_PASSWORD not in text


def test_check_config_and_its_errors_keep_secrets(tmp_path):
    good = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", SERVER)
    run = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check-config", "--config", str(good)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        good.read_text().replace(
            "type: demo\n  - name: other", "type: demo\n    tokn: x\n  - name: other"
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check-config", "--config", str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2
    assert f"{bad}:" in run.stderr and "tokn" in run.stderr and "Traceback" not in run.stderr
    for output in (run.stdout, run.stderr):
        assert TOKEN not in output and METRICS_PASSWORD not in output
