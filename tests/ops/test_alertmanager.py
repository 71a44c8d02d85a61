"""The example Alertmanager configuration: valid, routing every alert by severity, grouping by channel.

Parsed and validated here on every run; where Debian's prometheus-alertmanager package is installed, amtool checks
it as Alertmanager itself would and resolves each alert's route. (`./dev test` installs only the prometheus
package, so amtool is optional, unlike promtool.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.ops.deploy_files import ALERTMANAGER_YML, SEVERITIES, alert_rules, load_yaml

MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')
DURATION = re.compile(r"(\d+[smhdw])+")
RECEIVER_OF_SEVERITY = {"critical": "pager", "warning": "team-chat"}


def _matchers(entries: list[str]) -> list[tuple[str, str, str]]:
    parsed = []
    for entry in entries:
        found = MATCHER.match(entry)
        assert found, f"matcher {entry!r} is not label<op>\"value\""
        label, op, value = found.groups()
        if op in ("=~", "!~"):
            re.compile(value)
        parsed.append((label, op, value))
    return parsed


def _matches(matchers: list[tuple[str, str, str]], labels: dict[str, str]) -> bool:
    for label, op, value in matchers:
        actual = labels.get(label, "")
        ok = {"=": actual == value, "!=": actual != value, "=~": re.fullmatch(value, actual) is not None,
              "!~": re.fullmatch(value, actual) is None}[op]
        if not ok:
            return False
    return True


def _receiver(route: dict[str, Any], labels: dict[str, str]) -> str:
    """The receiver Alertmanager picks: the first matching child route, depth first, else the parent's."""
    for child in route.get("routes", []):
        if _matches(_matchers(child.get("matchers", [])), labels):
            return _receiver({**child, "receiver": child.get("receiver", route["receiver"])}, labels)
    return str(route["receiver"])


def _alert_labels() -> list[dict[str, str]]:
    return [{"alertname": rule.name, **rule.spec["labels"]} for rule in alert_rules()]


def test_config_is_valid() -> None:
    config = load_yaml(ALERTMANAGER_YML)
    assert set(config) <= {"global", "route", "inhibit_rules", "receivers", "templates", "time_intervals"}
    receivers = [receiver["name"] for receiver in config["receivers"]]
    assert len(receivers) == len(set(receivers)), "receiver names must be unique"

    def walk(route: dict[str, Any], top: bool) -> None:
        assert set(route) <= {"receiver", "group_by", "continue", "matchers", "group_wait", "group_interval",
                              "repeat_interval", "mute_time_intervals", "active_time_intervals", "routes"}, route
        assert not top or "matchers" not in route, "the top route matches everything"
        assert route.get("receiver", receivers[0]) in receivers, f"unknown receiver {route.get('receiver')}"
        _matchers(route.get("matchers", []))
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                assert DURATION.fullmatch(str(route[key])), f"{key}: {route[key]!r}"
        for child in route.get("routes", []):
            walk(child, top=False)

    walk(config["route"], top=True)
    assert "receiver" in config["route"], "the top route needs a receiver"
    alert_names = {rule.name for rule in alert_rules()}
    for rule in config.get("inhibit_rules", []):
        assert set(rule) <= {"source_matchers", "target_matchers", "equal"}, rule
        for side in ("source_matchers", "target_matchers"):
            for label, op, value in _matchers(rule[side]):
                if label == "alertname":
                    named = set(value.split("|")) if op == "=~" else {value}
                    assert named <= alert_names, f"inhibit rule names unknown alerts {named - alert_names}"


def test_every_alert_is_routed_by_severity_and_grouped_by_channel() -> None:
    config = load_yaml(ALERTMANAGER_YML)
    route = config["route"]
    assert route["group_by"] == ["alertname", "channel"]
    for labels in _alert_labels():
        assert labels["severity"] in SEVERITIES
        assert _receiver(route, labels) == RECEIVER_OF_SEVERITY[labels["severity"]], labels
    assert _receiver(route, {"alertname": "Other"}) == route["receiver"]


def test_amtool_accepts_the_config_and_agrees_on_routes() -> None:
    """Runs amtool when it is installed; the two tests above hold either way."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian's prometheus-alertmanager); the tests above validate the config")
    check = subprocess.run([amtool, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    for labels in _alert_labels():
        routed = subprocess.run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
                                 *(f"{key}={value}" for key, value in labels.items())],
                                capture_output=True, text=True, timeout=30, check=False)
        assert routed.returncode == 0, routed.stderr
        assert routed.stdout.split() == [RECEIVER_OF_SEVERITY[labels["severity"]]], (labels, routed.stdout)
