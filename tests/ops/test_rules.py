"""The Prometheus rules: promtool's unit tests pass, and every rule names real series, labels and runbooks."""

from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest

from stream.core.events import Reason
from stream.core.targets import load_targets
from stream.settings import ENVIRONMENT, Settings
from stream.tools.generator import CHANNELS
from tests.ops.deploy_files import (
    RULE_TESTS_DIR,
    RUNBOOKS,
    SEVERITIES,
    TARGETS,
    alert_rules,
    annotation_series,
    exported_series,
    label_matchers,
    load_yaml,
    recorded_names,
    recording_rules,
    rule_files,
    rule_test_files,
    rules,
    series_names,
    tool,
)

FUNNEL = tuple(ENVIRONMENT["funnel"][1].split(","))
STAGES = {*FUNNEL, "lost"}
RECORD_NAME = re.compile(r"[a-z]+(_[a-z]+)*:leadgen_[a-z_]+:[a-z0-9_]+|leadgen:[a-z_]+:[a-z0-9_]+")
DURATION = re.compile(r"(\d+[smhdw])+")


def _alert_tests() -> list[tuple[str, str, dict[str, object]]]:
    """(test file, test group name, alert_rule_test entry) of every promtool alert test."""
    return [(path.name, group.get("name", ""), case) for path in rule_test_files()
            for group in load_yaml(path)["tests"] for case in group.get("alert_rule_test", [])]


@pytest.mark.prometheus
def test_promtool_rule_unit_tests_pass() -> None:
    files = rule_test_files()
    assert {path.name for path in files} >= {"cost-per-lead-spike.test.yml", "cost-per-lead-target.test.yml",
                                             "pipeline-alerts.test.yml", "recording.test.yml"}
    result = subprocess.run([tool("promtool"), "test", "rules", *[path.name for path in files]], cwd=RULE_TESTS_DIR,
                            capture_output=True, text=True, timeout=240, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool test rules failed:\n{output}"
    assert output.count("SUCCESS") == len(files), output


def test_rule_tests_load_every_rule_file_they_need() -> None:
    """Each test file loads the rule files of the series it reads, by a path relative to itself."""
    for path in rule_test_files():
        spec = load_yaml(path)
        loaded = {(RULE_TESTS_DIR / name).resolve() for name in spec["rule_files"]}
        assert loaded <= {file.resolve() for file in rule_files()}, f"{path.name} loads unknown rule files"
        groups = {group["name"] for file in loaded for group in load_yaml(file)["groups"]}
        assert set(spec.get("group_eval_order", [])) == groups, (
            f"{path.name}: group_eval_order must list every loaded group, recording rules first, so that alert "
            "timings do not depend on promtool's order")


def test_every_alert_is_complete() -> None:
    alerts = alert_rules()
    assert {rule.name for rule in alerts} >= {"CostPerLeadSpike", "CostPerLeadAboveTarget", "PipelineStalled",
                                              "WatermarkStalled", "DeadLetterRateHigh", "LateEventRateHigh",
                                              "ConsumerLagHigh", "WorkerDown", "NoWorkerUp"}
    assert len({rule.name for rule in alerts}) == len(alerts), "alert names are not unique"
    for rule in alerts:
        spec = rule.spec
        assert DURATION.fullmatch(str(spec.get("for", ""))), f"{rule.name}: no `for:`"
        assert spec["labels"]["severity"] in SEVERITIES, f"{rule.name}: severity must be one of {SEVERITIES}"
        assert spec["labels"]["service"] == "leadgen-kpi", rule.name
        annotations = spec["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule.name
        assert annotations["runbook_url"] == f"docs/runbooks.md#{rule.name.lower()}", rule.name


def test_every_alert_has_a_runbook() -> None:
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert headings == [rule.name for rule in alert_rules()], "docs/runbooks.md: one section per alert, in order"


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    cases = _alert_tests()
    for rule in alert_rules():
        mine = [case for _, _, case in cases if case["alertname"] == rule.name]
        assert any(case["exp_alerts"] for case in mine), f"no promtool test shows {rule.name} firing"
        assert any(not case["exp_alerts"] for case in mine), f"no promtool test shows {rule.name} quiet"


def test_spike_alert_is_tested_on_spike_drift_tiny_volume_and_recovery() -> None:
    spike = [(group, case) for file, group, case in _alert_tests()
             if file == "cost-per-lead-spike.test.yml" and case["alertname"] == "CostPerLeadSpike"]
    by_group: dict[str, list[dict[str, object]]] = {}
    for group, case in spike:
        by_group.setdefault(group, []).append(case)

    def hours(case: dict[str, object]) -> float:
        parts = dict((unit, float(value)) for value, unit in re.findall(r"(\d+)([hm])", str(case["eval_time"])))
        return parts.get("h", 0.0) + parts.get("m", 0.0) / 60

    (spike_group,) = [name for name in by_group if "real spike" in name]
    timeline = sorted(by_group[spike_group], key=hours)
    fired = [hours(case) for case in timeline if case["exp_alerts"]]
    assert fired, "the real spike never fires"
    assert any(not case["exp_alerts"] and hours(case) > max(fired) for case in timeline), "no recovery after firing"
    assert any(not case["exp_alerts"] and hours(case) < min(fired) for case in timeline), "no pending phase"
    for scenario in ("slow drift", "tiny volume"):
        (group,) = [name for name in by_group if scenario in name]
        assert by_group[group] and not any(case["exp_alerts"] for case in by_group[group]), group


def test_recording_rules_are_named_level_metric_operations() -> None:
    for rule in recording_rules():
        assert RECORD_NAME.fullmatch(rule.name), f"{rule.name} is not level:metric:operations"
    # The dashboards and tests/test_deploy.py rely on these.
    assert {"channel:leadgen_cost_per_lead:ratio_rate1h", "channel:leadgen_cost_per_lead:ratio_rate1d",
            "channel:leadgen_cost_per_lead:ratio_avg7d_offset1h", "channel:leadgen_cost_per_lead_target:usd",
            "leadgen:events:rate5m"} <= recorded_names()


def test_rules_read_only_exported_or_recorded_series() -> None:
    known = exported_series() | recorded_names() | {"up"}
    for rule in rules():
        used = series_names(rule.expr) | (annotation_series(rule) if rule.is_alert else set())
        assert used, f"{rule.name} reads no series"
        assert used <= known, f"{rule.name} reads unknown series {used - known}"
        # Counters are per worker: a rule never reads one without a rate or increase and a sum.
        for name in used & exported_series():
            if name.endswith(("_total", "_bucket")):
                assert re.search(rf"(rate|increase)\(\s*{name}\b", rule.expr), f"{rule.name}: {name} needs rate()"
                assert "sum" in rule.expr, f"{rule.name}: {name} must be summed over workers"


def test_label_values_in_rules_exist() -> None:
    """Stage, reason and job values in matchers are values the workers and Prometheus produce."""
    reasons = {reason.value for reason in Reason}
    for rule in rules():
        for label, op, value in label_matchers(rule.expr):
            if label == "stage" and op in ("=", "!="):
                assert value in STAGES | {"entities", "cells"}, f"{rule.name}: unknown stage {value!r}"
            elif label == "reason" and op in ("=", "!="):
                assert value in reasons, f"{rule.name}: unknown reason {value!r}"
            elif label == "job":
                assert value == "leadgen-kpi", f"{rule.name}: job {value!r} is not scraped"
        for value in re.findall(r'label_replace\([^"]*"(?:from_stage|to_stage)",\s*"(\w+)"', rule.expr):
            assert value in FUNNEL, f"{rule.name}: unknown stage {value!r}"


def test_conversion_rule_covers_every_funnel_step() -> None:
    (rule,) = [rule for rule in recording_rules() if rule.name == "channel_step:leadgen_stage_conversion:ratio_rate1h"]
    steps = re.findall(r'stage="(\w+)"\}\s*/\s*ignoring \(stage\) \(\S+\{stage="(\w+)"\}', rule.expr)
    assert [(a, b) for b, a in steps] == list(zip(FUNNEL, FUNNEL[1:], strict=False))


def test_the_deployment_s_targets_are_a_file_a_worker_accepts_with_cost_per_lead_targets_per_channel() -> None:
    """deploy/targets.toml is what the workers of docker-compose.yml read: it loads with the default settings, and
    the channels with a cost-per-lead target are ones the generator sends (or `other`)."""
    settings = Settings.from_env({"KPI_TARGETS_FILE": str(TARGETS)})
    targets = load_targets(settings.targets_file, settings.window_sizes, settings.funnel)
    cost = [target for target in targets if target.kpi == "cost_per_lead"]
    assert cost and all(target.bound == "at_most" for target in cost)
    channels = Counter(dict(target.dimensions)["channel"] for target in cost)
    assert all(count == 1 for count in channels.values()), f"a channel has two targets: {channels}"
    assert set(channels) <= {channel for channel, *_ in CHANNELS} | {"other"}, (
        "a target for a channel the generator never sends (fine for real channels: extend this list then)")
    (rule,) = [rule for rule in recording_rules() if rule.name == "channel:leadgen_cost_per_lead_target:usd"]
    assert "leadgen_target{" in rule.expr and 'target_kpi="cost_per_lead"' in rule.expr
