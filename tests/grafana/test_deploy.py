"""deploy/: Prometheus and Alertmanager accept their configs (with the shipped rules), alerts
are routed by severity, and every file the compose file mounts exists."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Both from Debian packages scripts/system-deps.sh installs: prometheus, prometheus-alertmanager.
PROMTOOL = Path("/usr/bin/promtool")
AMTOOL = Path("/usr/bin/amtool")


def run(tool: Path, *args: str) -> str:
    assert tool.exists(), f"{tool} is missing: run scripts/system-deps.sh"
    done = subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{tool.name} {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_prometheus_config_is_valid_and_loads_the_shipped_rules() -> None:
    out = run(PROMTOOL, "check", "config", "deploy/prometheus.yml")
    assert "SUCCESS: 2 rule files found" in out
    for name in ("recording.yml", "alerts.yml"):
        assert f"grafana/prometheus/{name}" in out


def test_alertmanager_config_is_valid() -> None:
    out = run(AMTOOL, "check-config", "deploy/alertmanager.yml")
    assert "3 receivers" in out


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=SlamonBreachImminent", "severity=critical"], "pagerduty,slack,webhook"),
        (["alertname=SlamonSLABreached", "severity=warning"], "slack,webhook"),
        (["alertname=Other"], "webhook"),
    ],
)
def test_alerts_are_routed_by_severity(labels: list[str], receivers: str) -> None:
    out = run(AMTOOL, "config", "routes", "test", "--config.file=deploy/alertmanager.yml", *labels)
    assert out.strip() == receivers


def test_alertmanager_secrets_come_from_files() -> None:
    text = (DEPLOY / "alertmanager.yml").read_text()
    assert "hooks.slack.com" not in text and "routing_key:" not in text
    for secret in ("slack_api_url", "pagerduty_routing_key", "webhook_token"):
        assert f"/run/secrets/{secret}" in text


def test_compose_mounts_files_that_exist() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"slamon", "prometheus", "alertmanager", "grafana"}
    assert (DEPLOY / services["slamon"]["build"]["context"] / "pyproject.toml").is_file()
    assert (ROOT / services["slamon"]["build"]["dockerfile"]).is_file()
    mounted = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
                mounted[target] = (DEPLOY / source).resolve()
    # prometheus.yml names its rules ../grafana/prometheus/: the mount makes that path real
    assert mounted["/etc/prometheus/prometheus.yml"] == DEPLOY / "prometheus.yml"
    assert mounted["/etc/grafana/prometheus"] == ROOT / "grafana" / "prometheus"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/slamon.yml").read_text())
    assert mounted[provider["providers"][0]["options"]["path"]] == ROOT / "grafana" / "dashboards"
    for secret in services["alertmanager"]["secrets"]:
        assert secret in compose["secrets"]


def test_dockerfile_installs_the_repository() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY . /src" in text and "pip install /src" in text
    assert '"0.0.0.0:9181"' in text  # reachable from the other containers
