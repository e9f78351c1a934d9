"""The shipped Prometheus rules: promtool accepts them and their unit tests pass, every rule
has a firing and a quiet unit test, every alert is annotated with a runbook that exists, and
the Grafana-managed copies say the same."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "prometheus"
RULE_FILES = [RULES / "recording.yml", RULES / "alerts.yml"]
UNIT_TESTS = sorted((RULES / "tests").glob("*.yml"))
PROMTOOL = Path("/usr/bin/promtool")  # Debian's prometheus package (scripts/system-deps.sh)
GRAFANA_ALERTING = ROOT / "grafana" / "provisioning" / "alerting" / "slamon.yml"
GRAFANA_DATASOURCE = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(kind: str) -> list[dict[str, Any]]:
    return [r for f in RULE_FILES for g in load(f)["groups"] for r in g["rules"] if kind in r]


ALERTS = rules("alert")
RECORDS = rules("record")


def promtool(*args: str, cwd: Path = ROOT) -> None:
    assert PROMTOOL.exists(), "promtool is missing: run scripts/system-deps.sh"
    done = subprocess.run(
        [str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_promtool_check_rules() -> None:
    promtool("check", "rules", *map(str, RULE_FILES))


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no promtool unit tests in grafana/prometheus/tests"
    promtool("test", "rules", *(p.name for p in UNIT_TESTS), cwd=RULES / "tests")


def test_every_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    with_value: set[str] = set()
    without: set[str] = set()
    for path in UNIT_TESTS:
        for case in load(path)["tests"]:
            for check in case.get("promql_expr_test", []):
                (with_value if check["exp_samples"] else without).add(check["expr"])
            for check in case.get("alert_rule_test", []):
                (with_value if check["exp_alerts"] else without).add(check["alertname"])
    names = [r["record"] for r in RECORDS] + [r["alert"] for r in ALERTS]
    assert [n for n in names if n not in with_value] == [], "rules never seen firing/recording"
    assert [n for n in names if n not in without] == [], "rules never seen quiet"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for rule in RECORDS:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]
    # the customer metrics of CONTRACT.md, over each window
    for window in ("1h", "1d", "7d"):
        for name in ("slamon:csat:ratio", "slamon:nps:score", "slamon:ces:ratio",
                     "policy_metric:slamon_sla_compliance:ratio",
                     "policy:slamon_first_response_seconds:avg"):  # fmt: skip
            assert f"{name}_{window}" in {r["record"] for r in RECORDS}


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alert_is_annotated_and_has_a_runbook(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert alert["labels"]["severity"] in {"critical", "warning"}, name
    notes = alert["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert notes.get(key, "").strip(), f"{name}: no {key}"
    assert notes["runbook_url"] == f"docs/runbooks/{name}.md"
    runbook = ROOT / notes["runbook_url"]
    assert runbook.is_file(), f"{name}: {runbook} is missing"
    text = runbook.read_text()
    assert text.startswith(f"# {name}\n"), runbook
    for part in ("**Means:**", "**Check**", "**Fix**"):
        assert part in text, f"{runbook}: no {part}"


def test_grafana_alerting_matches_the_prometheus_alerts() -> None:
    datasource = load(GRAFANA_DATASOURCE)["datasources"][0]
    provisioned = load(GRAFANA_ALERTING)
    assert provisioned["apiVersion"] == 1
    grafana = {r["title"]: r for g in provisioned["groups"] for r in g["rules"]}
    assert sorted(grafana) == sorted(a["alert"] for a in ALERTS)
    uids = [r["uid"] for r in grafana.values()]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)
    for alert in ALERTS:
        rule = grafana[alert["alert"]]
        assert rule["labels"] == alert["labels"]
        assert rule["for"] == alert.get("for", "0s")
        assert rule["annotations"]["runbook_url"] == alert["annotations"]["runbook_url"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "$value " not in str(rule["annotations"]), "Grafana's number is $values.A.Value"
        query, threshold = rule["data"]
        assert query["datasourceUid"] == datasource["uid"]
        assert threshold["datasourceUid"] == "__expr__" and rule["condition"] == threshold["refId"]
        assert threshold["model"]["expression"] == query["refId"]
        # the same series and the same threshold (up is 0 or 1: "== 0" is "< 1")
        assert metric_names(query["model"]["expr"]) == metric_names(alert["expr"]), alert["alert"]
        (value,) = threshold["model"]["conditions"][0]["evaluator"]["params"]
        number = re.compile(rf"(?<![\w.]){value:g}(?![\w.])")
        absent = query["model"]["expr"] == alert["expr"].strip() and value == 0  # 1 or nothing
        up = alert["expr"] == "slamon_connector_up == 0"
        assert absent or up or number.search(alert["expr"]), (alert["alert"], value, alert["expr"])


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:helpdesk_|slamon_|[a-z_]+:)[a-z_:0-9]+", expr))
