"""The monitoring files under deploy/, loaded for the ops tests, and what they name (series, labels, tools)."""

from __future__ import annotations

import json
import re
import runpy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
RULE_TESTS_DIR = DEPLOY / "prometheus" / "tests"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
TARGETS = DEPLOY / "targets.toml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS_DIR = GRAFANA / "dashboards"
DASHBOARD_GENERATOR = GRAFANA / "dashboards.py"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
README = ROOT / "README.md"

JOB = "leadgen-kpi"
SEVERITIES = ("critical", "warning")
# Grafana's own variables, which need no definition in a dashboard.
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__range_ms", "__interval_ms"}

# PromQL words that look like series names to a tokenizer.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "inf", "nan", "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def tool(name: str) -> str:
    """Path of a Prometheus tool; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install Debian's prometheus package (`apt-get install -y prometheus`, "
                    f"which provides /usr/bin/{name}); `./dev test` and CI install it", pytrace=False)
    return path


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@dataclass(frozen=True)
class Rule:
    """One recording or alerting rule, with the file and group it is in."""

    file: Path
    group: str
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("record") or self.spec["alert"])

    @property
    def is_alert(self) -> bool:
        return "alert" in self.spec

    @property
    def expr(self) -> str:
        return str(self.spec["expr"])


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


@cache
def rules() -> tuple[Rule, ...]:
    return tuple(Rule(path, group["name"], rule) for path in rule_files()
                 for group in load_yaml(path)["groups"] for rule in group["rules"])


def recording_rules() -> list[Rule]:
    return [rule for rule in rules() if not rule.is_alert]


def alert_rules() -> list[Rule]:
    return [rule for rule in rules() if rule.is_alert]


def recorded_names() -> set[str]:
    return {rule.name for rule in recording_rules()}


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


@cache
def exported_series() -> frozenset[str]:
    """Every series name a worker's /metrics can show (counters with _total, histograms' parts)."""
    registry = CollectorRegistry()
    Metrics.create(registry, frozenset(), 20)
    names = {"leadgen_worker_ready"}  # registered next to the Metrics bundle, in stream/app.py
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return frozenset(names)


def series_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (a tokenizer good for this project's expressions)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS or word.startswith("__"):
            continue
        names.add(word)
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str]]:
    """(label, operator, value) of every label matcher in an expression."""
    return [(label, op, value) for block in re.findall(r"\{([^{}]*)\}", expr)
            for label, op, value in _MATCHER.findall(block)]


def annotation_series(rule: Rule) -> set[str]:
    """Series named in the query templates of an alert's annotations."""
    names: set[str] = set()
    for text in (rule.spec.get("annotations") or {}).values():
        for query in re.findall(r'(?:printf|query)\s+"((?:[^"\\]|\\.)*)"', str(text)):
            names |= series_names(query.replace("%s", "x"))
    return names


# ------------------------------------------------------------------------------------------------ Grafana


@cache
def dashboard_generator() -> dict[str, Any]:
    """The globals of deploy/grafana/dashboards.py, run from its path (deploy/ is not a package; no .pyc is left)."""
    return runpy.run_path(str(DASHBOARD_GENERATOR), run_name="leadgen_dashboards")


def dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards, by file name."""
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def variable_references(text: str) -> set[str]:
    """Names of the dashboard variables a query uses ($name, ${name}, [[name]])."""
    return set(re.findall(r"\$\{?(\w+)", text)) | set(re.findall(r"\[\[(\w+)\]\]", text))


def substitute(expr: str, values: dict[str, str]) -> str:
    """An expression with Grafana's variables replaced, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr
