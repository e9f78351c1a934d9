"""The shipped Grafana dashboards: well-formed Grafana 10 JSON whose every query goes
through the datasource variable, and whose every expression runs on a real Prometheus
scraping a real `slamon run --demo` with the shipped rules loaded."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_demo_run import FAMILIES, Demo, complete_scrape, required_samples
from tests.services import prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = [ROOT / "grafana" / "prometheus" / "recording.yml",
              ROOT / "grafana" / "prometheus" / "alerts.yml"]  # fmt: skip
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTERS = {"connector", "queue", "priority", "policy"}  # variables of the ticket dashboards
NO_QUERY = {"row", "text"}
# Series with windowed increases of answers or stopped clocks (the recording rules over
# 1h/1d/7d, compliance over the range) have no sample until something happens in the
# window; a Prometheus started seconds ago may not have seen it yet.
MAY_BE_EMPTY = re.compile(r":[a-z_]+_(1h|1d|7d)\b|helpdesk_sla_completed_total")


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold theirs


def exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every target."""
    return [
        (path.name, panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in panels(load(path))
        for target in panel.get("targets", [])
    ]


def concrete(expr: str) -> str:
    """An expr as Grafana would send it, every variable selecting all values."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "5m")
    expr = expr.replace("$__interval", "5m")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def test_the_three_dashboards_ship() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "on-call.json",
        "sla-overview.json",
        "slamon-health.json",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40 and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    wanted = {"connector"} if path.name == "slamon-health.json" else FILTERS
    assert wanted <= set(variables), f"missing variables: {wanted - set(variables)}"
    for name in wanted:
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["definition"].startswith("label_values(") and variable["includeAll"]
        assert variable["query"]["query"] == variable["definition"]

    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    used = set()
    for panel in panels(dashboard):
        where = f"{path.name}: {panel['title']!r}"
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, where
        if panel["type"] in NO_QUERY:
            assert "targets" not in panel, where
            continue
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["thresholds"]["steps"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target.get("expr", "").strip(), where
            used |= set(re.findall(r"\$\{?(\w+)", target["expr"]))
    unknown = used - set(variables) - {"__rate_interval", "__range", "__interval"}
    assert not unknown, f"{path.name} uses undefined variables {unknown}"
    assert "uid" not in json.dumps(dashboard).replace('"uid": "${datasource}"', "").replace(
        f'"uid": "{dashboard["uid"]}"', ""
    ), "a hard-coded datasource uid"


def test_panels_have_units_where_they_measure_something() -> None:
    for name, dashboard in ((p.name, load(p)) for p in DASHBOARDS):
        for panel in panels(dashboard):
            exprs_ = " ".join(t["expr"] for t in panel.get("targets", []))
            if re.search(r"seconds|lag|deadline|age", exprs_) and "count" not in exprs_:
                assert panel["fieldConfig"]["defaults"].get("unit") == "s", (name, panel["title"])
            if re.search(r":ratio_|compliance", exprs_):
                assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit", panel["title"]


def query(base: str, expr: str) -> dict[str, Any]:
    answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    return dict(answer.json())


def scraped_three_times(base: str) -> bool:
    return all(
        query(base, f"count_over_time({sample}[1m]) >= 3")["data"]["result"]
        for family, kind in FAMILIES.items()
        for sample in required_samples(family, kind)
    )


def label_values_found(base: str, definition: str) -> bool:
    """A variable's ``label_values(selector, label)`` finds at least one value."""
    found = re.fullmatch(r"label_values\((.+), *(\w+)\)", definition)
    assert found, definition
    answer = requests.get(
        f"{base}/api/v1/label/{found[2]}/values", params={"match[]": concrete(found[1])}, timeout=10
    ).json()
    return bool(answer["status"] == "success" and answer["data"])


def test_every_expr_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    demo = Demo(workdir, tmp_path / "slamon.log")
    try:
        demo.start()
        # Prometheus scrapes from the start, while the demo fills its history
        with prometheus(RULE_FILES, [demo.base.removeprefix("http://")]) as base:
            complete_scrape(demo)
            demo.until("every family in three scrapes", lambda: scraped_three_times(base), 30)
            groups = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
            unhealthy = [r["name"] for g in groups for r in g["rules"] if r["health"] != "ok"]
            assert len(groups) == 5 and not unhealthy, unhealthy

            failed: list[tuple[str, str, str, Any]] = []
            empty: list[tuple[str, str]] = []
            allowed: list[tuple[str, str]] = []
            for dashboard, title, expr in exprs():
                answer = query(base, concrete(expr))
                if answer.get("status") != "success":
                    failed.append((dashboard, title, expr, answer.get("error")))
                elif not answer["data"]["result"]:
                    (allowed if MAY_BE_EMPTY.search(expr) else empty).append((dashboard, title))
            assert not failed, "\n".join(map(str, failed))
            assert not empty, f"no data for {empty}"

            variables = [v for p in DASHBOARDS for v in load(p)["templating"]["list"]]
            for variable in variables:
                if variable["type"] == "query":
                    assert label_values_found(base, variable["definition"]), variable
        if allowed:
            warnings.warn(f"empty until their windows fill: {allowed}", stacklevel=1)
    finally:
        demo.kill()
