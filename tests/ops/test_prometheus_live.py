"""Against a running system: the real Prometheus, with the project's rule files, scrapes a real worker fed live
synthetic traffic on the real broker; through Prometheus' HTTP API every recording rule, every dashboard query
and every dashboard variable must return data, so no rule or panel names a missing series or a wrong label.

Prometheus is started fresh, so series older than the test do not exist. The cost-per-lead baseline looks at the
7 days that end an hour ago (``offset 1h``) and is rightly empty here: it, and every series computed from it, is
evaluated with the offset removed (``_without_history``), which still proves that each name, label and function in
it is right. The promtool unit tests (deploy/prometheus/tests/) check the baseline's values over 9 days of data.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.brokers.embedded import free_port
from stream.core.events import Kind
from stream.kafka.produce import BatchProducer, produce_paced
from stream.tools.generator import TrafficModel
from tests.integration.harness import Names, Worker, producer_config
from tests.ops.deploy_files import (
    JOB,
    PROMETHEUS_YML,
    TARGETS,
    Rule,
    dashboards,
    load_yaml,
    panels,
    recording_rules,
    rule_files,
    rules,
    series_names,
    substitute,
    tool,
    variable_query,
    variables,
)
from tests.ops.prometheus_server import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.prometheus, pytest.mark.slow]

TRAFFIC_SECONDS = 25.0
EVENTS_PER_SECOND = 160.0  # about 4,000 events: every rate and ratio has samples, in well under a minute
# Funnel delays of 10 to 40 minutes become 5 to 20 seconds, so most leads move on during the run. At the demo's 20,
# a 25-second run sees a handful of MQLs, each the first of its labels; and rate() misses the increment that
# creates a series (the workers create labelled series on first use), so conversions and their times stay empty.
TIME_SCALE = 120.0
LATE_BURSTS = (20, 20)  # page views three hours old, once the watermark is current: dead-lettered as late. Two
# bursts, because the first one creates the series and rate() only sees the second.
# Grafana's variables as a query would see them with "All" selected and a short time range.
GRAFANA_VALUES = {"channel": ".*", "campaign": ".*", "period": ".*", "instance": ".*", "__rate_interval": "1m",
                  "__range": "5m", "__interval": "15s"}
_OFFSET = re.compile(r"\s+offset\s+\d+[smhdwy]")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _config(worker_port: int) -> dict[str, Any]:
    """The project's prometheus.yml, scraping one worker on loopback every second, with the repository's rules."""
    config = load_yaml(PROMETHEUS_YML)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    return {
        "global": {**config["global"], "scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files()],
        # Static instead of the compose file's Docker DNS discovery; no Alertmanager (alerts are not sent here).
        "scrape_configs": [{"job_name": JOB, "metrics_path": job.get("metrics_path", "/metrics"),
                            "scrape_interval": "1s", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}],
    }


def _late_page_views(burst: int, count: int) -> list[tuple[Kind, bytes]]:
    three_hours_ago = _now_ms() - 3 * 3_600_000
    return [(Kind.PAGE_VIEW, orjson.dumps({"event_id": f"late-{burst}-{n}", "ts": three_hours_ago,
                                           "visitor_id": "v-late", "url": "/pricing", "channel": "direct"}))
            for n in range(count)]


def _watermark_is_current(worker: Worker) -> bool:
    try:
        samples = worker.metrics()
    except OSError:
        return False
    watermark = samples.get(("leadgen_watermark_timestamp_seconds", (("stage", "entities"),)), 0.0)
    return watermark > time.time() - 600


def _traffic(worker: Worker) -> Iterator[tuple[Kind, bytes]]:
    """Live synthetic traffic; bursts of late events, 3 s apart, once the watermark has caught up with the clock."""
    model = TrafficModel(seed=23, start_ms=_now_ms(), time_scale=TIME_SCALE, clock_ms=_now_ms)
    bursts = list(LATE_BURSTS)
    next_burst = 0.0
    for count, event in enumerate(model.events(), start=1):
        yield event
        if bursts and count % 250 == 0 and time.monotonic() >= next_burst and _watermark_is_current(worker):
            yield from _late_page_views(len(bursts), bursts.pop())
            next_burst = time.monotonic() + 3


def _history_free(rule_by_name: dict[str, Rule]) -> dict[str, str]:
    """Expressions, by record name, of the rules that need history older than the test, with it taken out.

    A rule needs such history when its expression has an ``offset``, or reads a series recorded by such a rule;
    the offset is dropped and such series are replaced by their own expression, in parentheses.
    """
    needs: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, rule in rule_by_name.items():
            if name in needs:
                continue
            if _OFFSET.search(rule.expr) or series_names(rule.expr) & needs.keys():
                needs[name] = _inline(_OFFSET.sub("", rule.expr), needs)
                changed = True
    return needs


def _inline(expr: str, expressions: dict[str, str]) -> str:
    """Replace each series of ``expressions`` in ``expr`` by its expression; a selector may only keep matchers
    that match everything (``=~".*"``, as a dashboard's "All")."""
    for name, replacement in expressions.items():
        pattern = re.compile(rf"(?<![\w:]){re.escape(name)}(?![\w:])(\{{[^}}]*\}})?")

        def whole(match: re.Match[str], replacement: str = replacement) -> str:
            matchers = (match.group(1) or "{}").strip("{}")
            assert all(re.fullmatch(r'\s*\w+\s*=~\s*"\.\*"\s*', m) for m in matchers.split(",") if m.strip()), (
                f"cannot inline {match.group(0)}: only matchers that match everything can be dropped")
            return f"({replacement})"

        expr = pattern.sub(whole, expr)
    return expr


def _has_data(prometheus: PrometheusServer, expr: str) -> bool:
    """Whether an expression returns at least one sample that is a number (not only NaN, as a quantile of nothing)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in prometheus.query(expr))


def _wait_for_data(prometheus: PrometheusServer, exprs: dict[str, str], timeout_s: float) -> dict[str, str]:
    """Re-query until every expression returns data or the time is up; returns those still without, by what."""
    deadline = time.monotonic() + timeout_s
    pending = dict(exprs)
    while True:
        pending = {what: expr for what, expr in pending.items() if not _has_data(prometheus, expr)}
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(1.0)


def test_every_rule_and_panel_returns_data(bootstrap: str, names: Names, tmp_path: Path) -> None:
    worker_port = free_port()
    # Input partitions the traffic has not reached yet stop holding the watermark back after 2 s instead of 10 s,
    # so the watermark is current (and old events are late) early in the run.
    # The deployment's targets, which the target rules and panels read.
    worker = Worker(names.env(bootstrap, worker_port, KPI_IDLE_PARTITION_TIMEOUT="2s", KPI_TARGETS_FILE=str(TARGETS)),
                    tmp_path / "worker.log")
    prometheus = PrometheusServer(tool("prometheus"), _config(worker_port), tmp_path)
    try:
        prometheus.wait_ready()
        worker.wait_ready()
        producer = BatchProducer(producer_config(bootstrap))
        topics = {kind: names.topic(kind.value) for kind in Kind}
        for _ in produce_paced(producer, topics, _traffic(worker), EVENTS_PER_SECOND, TRAFFIC_SECONDS):
            pass
        assert producer.delivered > 0.8 * EVENTS_PER_SECOND * TRAFFIC_SECONDS, producer.delivered
        # Stage changes still waiting for their lead are counted later, hence not all of them.
        worker.wait_until(lambda: worker.accounted() >= 0.95 * producer.delivered, timeout_s=30,
                          what="the worker to process the traffic")

        (target,) = prometheus.api("targets", state="active")["activeTargets"]
        assert target["health"] == "up" and target["labels"]["job"] == JOB, target

        # The late events were dead-lettered as such (reason="late" is a real label value) and reach the late share.
        late = _wait_for_data(prometheus, {"late": "leadgen:events_late:ratio_rate5m > 0"}, timeout_s=15)
        assert not late, f"no late event was counted:\n{worker.log_tail()}"

        rule_by_name = {rule.name: rule for rule in recording_rules()}
        without_history = _history_free(rule_by_name)
        assert "channel:leadgen_cost_per_lead:ratio_avg7d_offset1h" in without_history

        # Every recording rule's expression returns data (those that need old history, without it), and so does
        # every series Prometheus recorded from them.
        checks = {f"rule {name}": without_history.get(name, rule.expr) for name, rule in rule_by_name.items()}
        checks |= {f"recorded {name}": name for name in rule_by_name if name not in without_history}
        # Every dashboard query, with "All" selected; series that need old history are inlined without it.
        for file, dashboard in dashboards().items():
            for panel in panels(dashboard):
                for target in panel["targets"]:
                    expr = substitute(target["expr"], GRAFANA_VALUES)
                    prometheus.query(expr)  # as written, it parses and evaluates
                    checks[f"{file} / {panel['title']} / {target['refId']}"] = _inline(expr, without_history)
            # Every variable's label_values() finds values.
            for name, variable in variables(dashboard).items():
                if variable["type"] != "query":
                    continue
                found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable_query(variable))
                assert found, f"{file}: variable {name} is not a label_values() query"
                selector, label = substitute(found.group(1), GRAFANA_VALUES), found.group(2)
                checks[f"{file} / variable {name}"] = f"count by ({label}) ({selector})"
        missing = _wait_for_data(prometheus, checks, timeout_s=30)
        assert not missing, "no data for:\n" + "\n".join(f"  {what}: {expr}" for what, expr in missing.items())

        # Every rule, alerts included, evaluates without error.
        evaluated = [(rule["name"], rule["health"], rule.get("lastError", ""))
                     for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert {name for name, _, _ in evaluated} == {rule.name for rule in rules()}
        assert all(health == "ok" and not error for _, health, error in evaluated), evaluated
        assert not worker.errors(), worker.errors()
    finally:
        prometheus.stop()
        assert worker.stop() == 0, worker.log_tail()
