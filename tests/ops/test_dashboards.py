"""The Grafana dashboards: generated from deploy/grafana/dashboards.py, and linted.

Lint: the data source is the ``$datasource`` variable everywhere, no query names an instance or a host, every
panel has a unit that fits what it shows (currency for money, percentunit for ratios, seconds for durations),
every variable a query uses is defined, every series a query reads exists, and panels do not overlap.
(Whether each query returns data is tests/ops/test_prometheus_live.py's job.)
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ops.deploy_files import (
    DASHBOARD_GENERATOR,
    DASHBOARDS_DIR,
    GRAFANA,
    GRAFANA_BUILTINS,
    dashboard_generator,
    dashboards,
    exported_series,
    label_matchers,
    load_yaml,
    panels,
    recorded_names,
    series_names,
    variable_query,
    variable_references,
    variables,
)

# The Grafana unit ids these dashboards may use (packages/grafana-data/src/valueFormats/categories.ts).
UNITS = {"currencyUSD", "percentunit", "s", "short", "cps", "none"}
HOST_PORT = re.compile(r"\b(\d{1,3}(\.\d{1,3}){3}|localhost|[\w-]+\.[\w.-]+):\d{2,5}\b")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [str(target["expr"]) for target in panel["targets"]]


def _expected_unit(panel: dict[str, Any]) -> str | None:
    """The unit a panel's queries call for, from the series they read (None: any count-like unit)."""
    text = " ".join(_exprs(panel))
    if "_vs_baseline" in text or ":ratio" in text and "cost_per_lead" not in text:
        return "percentunit"
    if re.search(r"stage_entries[^/]*/", text):  # stage entries over stage entries: a conversion
        return "percentunit"
    if re.search(r"leadgen_spend|cost_per_lead", text):
        return "currencyUSD"
    if re.search(r"_seconds|time\(\)", text):
        return "s"
    if re.search(r"\brate\(", text):
        return "cps"
    return None


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    generator = dashboard_generator()
    expected = {name: generator["render"](build()) for name, build in generator["DASHBOARDS"].items()}
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARDS_DIR.glob("*.json")}
    assert set(committed) == set(expected), "run: python deploy/grafana/dashboards.py"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} differs from the generator's output: run python {DASHBOARD_GENERATOR}"


def test_dashboards_are_provisioned_with_fixed_uids() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "leadgen.yml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["uid"] == "leadgen-prometheus"
    found = {dashboard["uid"]: dashboard["title"] for dashboard in dashboards().values()}
    assert found == {"leadgen-kpis": "Lead-gen KPIs", "leadgen-pipeline": "Lead-gen pipeline health"}
    for dashboard in dashboards().values():
        assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard has no fixed id"


@pytest.mark.parametrize("file", sorted(path.name for path in DASHBOARDS_DIR.glob("*.json")))
def test_dashboard_lint(file: str) -> None:
    dashboard = dashboards()[file]
    defined = variables(dashboard)
    datasource = defined["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    known_series = exported_series() | recorded_names() | {"up"}
    used_variables: set[str] = set()
    for name, variable in defined.items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, f"variable {name}: data source not templated"
            assert variable["includeAll"] and variable["allValue"] == ".*", f"variable {name}: All must be .*"
            query = variable_query(variable)
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert selector, f"variable {name}: {query} is not label_values(selector, label)"
            assert series_names(selector.group(1)) <= known_series, query
            used_variables |= variable_references(query)
    ids = [panel["id"] for panel in dashboard["panels"]] + [p["id"] for p in panels(dashboard)
                                                          if p not in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are not unique"
    for panel in panels(dashboard):
        where = f"{file} / {panel['title']}"
        assert panel["title"].strip() and panel.get("description", "").strip(), f"{where}: title and description"
        assert panel["datasource"] == DATASOURCE, f"{where}: data source not templated"
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in UNITS, f"{where}: unit {unit!r} is not set or not a known Grafana unit"
        expected = _expected_unit(panel)
        if expected is not None:
            assert unit == expected, f"{where}: unit {unit!r}, expected {expected!r}"
        assert panel["targets"], f"{where}: no query"
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), where
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"] == DATASOURCE, f"{where}: target data source not templated"
            assert not HOST_PORT.search(expr), f"{where}: hard-coded host in {expr}"
            for label, _, value in label_matchers(expr):
                if label == "instance":
                    assert value == "$instance", f"{where}: hard-coded instance {value!r}"
            used = variable_references(expr)
            assert used <= set(defined) | GRAFANA_BUILTINS, f"{where}: undefined variables {used - set(defined)}"
            used_variables |= used
            assert series_names(expr) <= known_series, f"{where}: unknown series {series_names(expr) - known_series}"
    assert set(defined) - {"datasource"} <= used_variables, "a variable that no query uses"


def test_kpi_dashboard_filters_by_channel_and_campaign() -> None:
    dashboard = dashboards()["leadgen-kpis.json"]
    assert {"datasource", "channel", "campaign"} <= set(variables(dashboard))
    exprs = [expr for panel in panels(dashboard) for expr in _exprs(panel)]
    assert all('channel=~"$channel"' in expr for expr in exprs), "every KPI query filters by channel"
    # Only spend and leads have a campaign label; every query over them filters by it too.
    for expr in exprs:
        if re.search(r"channel_campaign:|leadgen_(spend|leads)_total", expr):
            assert 'campaign=~"$campaign"' in expr, expr
    titles = " | ".join(panel["title"] for panel in panels(dashboard))
    for needed in ("baseline", "Conversion by funnel step", "Time to conversion, median", "Spend", "Leads"):
        assert needed in titles, needed


def test_pipeline_dashboard_covers_pipeline_health() -> None:
    dashboard = dashboards()["leadgen-pipeline.json"]
    text = " ".join(expr for panel in panels(dashboard) for expr in _exprs(panel))
    for series in ("leadgen_events_total", "leadgen_events_rejected_total", "leadgen_events_duplicate_total",
                   "leadgen:events_late:ratio_rate5m", "leadgen_consumer_lag_messages",
                   "leadgen_watermark_timestamp_seconds", "leadgen_rebalances_total", "up{"):
        assert series in text, series


@pytest.mark.parametrize("file", sorted(path.name for path in DASHBOARDS_DIR.glob("*.json")))
def test_panels_do_not_overlap(file: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboards()[file]["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{panel['title']}: wider than the dashboard"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
