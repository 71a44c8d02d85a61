"""The Grafana dashboards as code: ``python deploy/grafana/dashboards.py`` writes deploy/grafana/dashboards/*.json.

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39: Grafana 10 to 12 load it as is) rather
than grafanalib, so that generating needs nothing beyond the standard library and the project's dependencies stay
as they are. tests/ops/test_dashboards.py fails when the committed JSON differs from what this writes, and lints it;
tests/ops/test_prometheus_live.py runs every query against a real Prometheus scraping a real worker.

Every query reads Prometheus through the ``$datasource`` variable (the provisioned data source has the fixed uid
``leadgen-prometheus``), no query names an instance, and every panel has a unit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "leadgen-kpi"
FUNNEL = ("lead", "mql", "sal", "sql", "opportunity", "won")  # KPI_FUNNEL's default

# Grafana unit ids. Money is in the reporting currency, KPI_REPORTING_CURRENCY, USD by default.
MONEY = "currencyUSD"
RATIO = "percentunit"
SECONDS = "s"
COUNT = "short"
PER_SECOND = "cps"
STATE = "none"


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel; ``options`` and ``field_config`` are merged over the defaults of its kind."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    options: Mapping[str, Any] = field(default_factory=dict)
    field_config: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[Mapping[str, Any], ...] = ()
    transformations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Row:
    """A row header and the panels under it."""

    title: str
    panels: tuple[Panel, ...]


# ------------------------------------------------------------------------------------------------- JSON model


def _threshold_line(value: float) -> dict[str, Any]:
    """Field config that draws a red line at ``value`` (an alert threshold)."""
    return {
        "thresholds": {"mode": "absolute",
                       "steps": [{"color": "green", "value": None}, {"color": "red", "value": value}]},
        "custom": {"thresholdsStyle": {"mode": "line"}},
    }


_UP_DOWN = {"mappings": [{"type": "value", "options": {
    "0": {"text": "DOWN", "color": "red", "index": 0},
    "1": {"text": "UP", "color": "green", "index": 1},
}}]}
_READY = {"mappings": [{"type": "value", "options": {
    "0": {"text": "NOT READY", "color": "orange", "index": 0},
    "1": {"text": "READY", "color": "green", "index": 1},
}}]}
_DASHED = {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}

_KIND_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # kind: (options, fieldConfig.defaults)
    "timeseries": (
        {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
         "tooltip": {"mode": "multi", "sort": "desc"}},
        {"custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                    "spanNulls": False}},
    ),
    "stat": (
        {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value",
         "graphMode": "none", "justifyMode": "auto", "orientation": "auto", "textMode": "auto"},
        {},
    ),
    "bargauge": (
        {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "displayMode": "gradient",
         "orientation": "horizontal", "showUnfilled": True, "valueMode": "color"},
        {"min": 0},
    ),
    "table": ({"showHeader": True, "cellHeight": "sm"}, {}),
}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _target(query: Query, ref_id: str, table: bool) -> dict[str, Any]:
    target: dict[str, Any] = {"refId": ref_id, "datasource": DATASOURCE, "editorMode": "code", "expr": query.expr,
                              "legendFormat": query.legend or "__auto", "range": not query.instant,
                              "instant": query.instant}
    if table:
        target["format"] = "table"
    return target


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    options, defaults = _KIND_DEFAULTS[panel.kind]
    refs = "ABCDEFGHIJ"
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": _merge(_merge(defaults, {"unit": panel.unit}), panel.field_config),
                        "overrides": list(panel.overrides)},
        "options": _merge(options, panel.options),
        "targets": [_target(query, refs[i], panel.kind == "table") for i, query in enumerate(panel.queries)],
        "transformations": list(panel.transformations),
    }


def _layout(rows: tuple[Row, ...]) -> list[dict[str, Any]]:
    """Rows top to bottom; panels left to right, wrapping at Grafana's 24 columns."""
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for row in rows:
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        x, row_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return panels


def _datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value variable with "All" as ``.*``, so that every query can filter with ``=~"$name"``."""
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "definition": query,
            "query": {"query": query, "refId": f"{name}-values"}, "refresh": 2, "sort": 1, "includeAll": True,
            "allValue": ".*", "multi": True, "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0, "options": [], "regex": "", "skipUrlSync": False}


def _dashboard(uid: str, title: str, description: str, variables: list[dict[str, Any]],
               rows: tuple[Row, ...]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [_datasource_variable(), *variables]},
        "links": [{"title": "Lead-gen dashboards", "type": "dashboards", "tags": [TAG], "asDropdown": False,
                   "includeVars": False, "keepTime": True}],
        "panels": _layout(rows),
    }


# ------------------------------------------------------------------------------------------- Lead-gen KPIs

# Selections of the KPI dashboard: channel everywhere; campaign where the metric has it (spend and leads only).
CH = 'channel=~"$channel"'
CH_CAMP = 'channel=~"$channel", campaign=~"$campaign"'


def _step_conversion(from_stage: str, to_stage: str) -> str:
    """Conversion of one funnel step over the selected channels: a ratio of sums, labelled ``step``."""
    entries = "channel_stage:leadgen_stage_entries:increase1h"
    return (f'label_replace(sum({entries}{{{CH}, stage="{to_stage}"}}) / (sum({entries}{{{CH}, stage="{from_stage}"}})'
            f' > 0), "step", "{from_stage} → {to_stage}", "", "")')


def _ttc_quantile(quantile: float) -> str:
    return (f"histogram_quantile({quantile}, sum by (le, from_stage, to_stage) "
            f"(channel_step:leadgen_time_to_conversion_seconds_bucket:rate1h{{{CH}}}))")


def kpi_dashboard() -> dict[str, Any]:
    """Lead-gen KPIs: cost per lead with its baseline and target, spend and leads, the funnel, time to conversion."""
    cost = Row("Cost per lead", (
        Panel("Cost per lead, trailing hour, with 7-day baseline and target",
              "Spend ÷ leads over the last hour per channel (solid), the channel's baseline: the same ratio over the "
              "7 days ending an hour ago (dashed), and its cost_per_lead target (the workers' KPI_TARGETS_FILE). "
              "CostPerLeadSpike fires at twice the baseline on at least 20 leads an hour.",
              MONEY, (
                  Query(f"channel:leadgen_cost_per_lead:ratio_rate1h{{{CH}}}", "{{channel}}"),
                  Query(f"channel:leadgen_cost_per_lead:ratio_avg7d_offset1h{{{CH}}}", "{{channel}} baseline (7 d)"),
                  Query(f"channel:leadgen_cost_per_lead_target:usd{{{CH}}}", "{{channel}} target"),
              ), width=16, overrides=(
                  {"matcher": {"id": "byRegexp", "options": ".* (baseline|target).*"}, "properties": [_DASHED]},
              )),
        Panel("Blended cost per lead of the selection",
              "All spend ÷ all leads of the selected channels and campaigns (leads without spend, such as organic "
              "ones, count), over the trailing hour and day.",
              MONEY, (
                  Query(f"sum(channel_campaign:leadgen_spend:increase1h{{{CH_CAMP}}}) / "
                        f"(sum(channel_campaign:leadgen_leads:increase1h{{{CH_CAMP}}}) > 0)", "trailing hour"),
                  Query(f"sum(increase(leadgen_spend_total{{{CH_CAMP}}}[1d])) / "
                        f"(sum(increase(leadgen_leads_total{{{CH_CAMP}}}[1d])) > 0)", "trailing day"),
              ), kind="stat", width=8),
        Panel("Cost per lead ÷ 7-day baseline",
              "The trailing hour's cost per lead as a share of the channel's baseline; the red line is "
              "CostPerLeadSpike's threshold (200 %).",
              RATIO, (Query(f"channel:leadgen_cost_per_lead_vs_baseline:ratio{{{CH}}}", "{{channel}}"),),
              width=8, field_config=_threshold_line(2)),
        Panel("Cost per lead by campaign, trailing hour", "Spend ÷ leads over the last hour per channel and campaign.",
              MONEY, (Query(f"channel_campaign:leadgen_cost_per_lead:ratio_rate1h{{{CH_CAMP}}}",
                            "{{channel}} / {{campaign}}"),), width=8),
        Panel("Cost per lead, trailing day", "Spend ÷ leads over the last 24 hours per channel.",
              MONEY, (Query(f"channel:leadgen_cost_per_lead:ratio_rate1d{{{CH}}}", "{{channel}}"),), width=8),
    ))
    volume = Row("Spend and leads", (
        Panel("Spend, trailing hour", "Spend booked over the last hour per channel (selected campaigns).",
              MONEY, (Query(f"sum by (channel) (channel_campaign:leadgen_spend:increase1h{{{CH_CAMP}}})",
                            "{{channel}}"),), width=9),
        Panel("Leads, trailing hour", "Leads created over the last hour per channel (selected campaigns).",
              COUNT, (Query(f"sum by (channel) (channel_campaign:leadgen_leads:increase1h{{{CH_CAMP}}})",
                            "{{channel}}"),), width=9),
        Panel("Spend in the time range", "Spend of the selection over the dashboard's time range.",
              MONEY, (Query(f"sum(increase(leadgen_spend_total{{{CH_CAMP}}}[$__range]))", "spend", instant=True),),
              kind="stat", width=3),
        Panel("Leads in the time range", "Leads of the selection created over the dashboard's time range.",
              COUNT, (Query(f"sum(increase(leadgen_leads_total{{{CH_CAMP}}}[$__range]))", "leads", instant=True),),
              kind="stat", width=3),
    ))
    funnel = Row("Funnel", (
        Panel("Leads entering each stage in the time range",
              "Leads of the selected channels entering each funnel stage for the first time (lost is outside the "
              "funnel).",
              COUNT, (Query(f'sort_desc(sum by (stage) (increase(leadgen_stage_entries_total{{{CH}, stage!="lost"}}'
                            f"[$__range])))", "{{stage}}", instant=True),), kind="bargauge", width=8),
        Panel("Conversion by funnel step, trailing hour",
              "Leads entering the later stage ÷ leads entering the earlier one over the last hour, summed over the "
              "selected channels (a ratio of sums).",
              RATIO, (Query(" or ".join(_step_conversion(a, b) for a, b in zip(FUNNEL, FUNNEL[1:], strict=False)),
                            "{{step}}"),), width=8, field_config={"min": 0}),
        Panel("Conversion by channel and step, trailing hour",
              "Each channel's conversion of each funnel step over the last hour (rows: channels; columns: the "
              "stage converted to).",
              RATIO, (Query(f"channel_step:leadgen_stage_conversion:ratio_rate1h{{{CH}}}", instant=True),),
              kind="table", width=8, transformations=(
                  {"id": "groupingToMatrix",
                   "options": {"columnField": "to_stage", "rowField": "channel", "valueField": "Value"}},
              )),
        Panel("Time to conversion, median, trailing hour",
              "Median time from entering a stage to entering the next, over the selected channels.",
              SECONDS, (Query(_ttc_quantile(0.5), "{{from_stage}} → {{to_stage}}"),)),
        Panel("Time to conversion, 90th percentile, trailing hour",
              "90th percentile of the time from entering a stage to entering the next, over the selected channels.",
              SECONDS, (Query(_ttc_quantile(0.9), "{{from_stage}} → {{to_stage}}"),)),
    ))
    periods = Row("Calendar periods and targets", (
        Panel("Cost per lead in the current window of each period",
              "Spend ÷ leads in the event-time window in progress of each size of KPI_WINDOW_SIZES (the period "
              "selector: day, week, month, quarter ... in KPI_TIMEZONE), per channel: what the KPI records of that "
              "window say.",
              MONEY, (Query(f'max by (channel, window) (leadgen_cost_per_lead{{{CH}, window=~"$period"}})',
                            "{{channel}} {{window}}"),), width=12),
        Panel("Conversion by funnel step in the current window of each period",
              "Leads entering the later stage ÷ leads entering the earlier one in the event-time window in progress "
              "of each selected period, per selected channel (channel all: all traffic).",
              RATIO, (Query(f'max by (channel, from_stage, to_stage, window) '
                            f'(leadgen_conversion_ratio{{{CH}, window=~"$period"}})',
                            "{{channel}} {{from_stage}} → {{to_stage}} {{window}}"),), width=12,
              field_config={"min": 0}),
        Panel("Targets: attainment",
              "Each target's KPI ÷ the target in the latest window of its period (KPI_TARGETS_FILE): 1 reached. "
              "For an at_most target (a cost per lead ceiling) under 1 is good.",
              RATIO, (Query(f'max by (target_kpi, period, bound, channel, campaign) '
                            f'(leadgen_target_attainment_ratio{{{CH}, period=~"$period"}})',
                            "{{target_kpi}} {{channel}} {{campaign}} per {{period}} ({{bound}})", instant=True),),
              kind="bargauge", width=12),
        Panel("Targets: pacing",
              "Attainment ÷ the share of the period the watermark has passed, for targets whose KPI accumulates "
              "(on pace at 100 %). The red line is TargetBehindPace's threshold (80 %), which waits for a fifth of "
              "the period.",
              RATIO, (Query(f'target:leadgen_target_pacing:ratio{{{CH}, bound="at_least", period=~"$period"}}',
                            "{{target_kpi}} {{channel}} {{campaign}} per {{period}}"),),
              width=12, field_config=_threshold_line(0.8)),
    ))
    return _dashboard(
        "leadgen-kpis", "Lead-gen KPIs",
        "Cost per lead, spend, leads, funnel conversion and time to conversion, live from the KPI workers; KPIs "
        "per calendar period and the team's targets.",
        [_query_variable("channel", "Channel", "label_values(leadgen_leads_total, channel)"),
         _query_variable("campaign", "Campaign", 'label_values(leadgen_leads_total{channel=~"$channel"}, campaign)'),
         _query_variable("period", "Period", "label_values(leadgen_cost_per_lead, window)")],
        (cost, volume, funnel, periods))


# ------------------------------------------------------------------------------------------ Pipeline health

INST = 'instance=~"$instance"'


def pipeline_dashboard() -> dict[str, Any]:
    """Pipeline health: workers, throughput, rejections, lag, watermark delay, rebalances."""
    workers = Row("Workers", (
        Panel("Worker up", "Whether Prometheus scrapes each worker (WorkerDown, NoWorkerUp).",
              STATE, (Query(f'up{{job="leadgen-kpi", {INST}}}', "{{instance}}"),), kind="stat", width=6,
              field_config=_UP_DOWN),
        Panel("Worker ready", "1 once a worker has recovered its state and processes events.",
              STATE, (Query(f"leadgen_worker_ready{{{INST}}}", "{{instance}}"),), kind="stat", width=6,
              field_config=_READY),
        Panel("Rebalances", "Consumer-group rebalances each worker took part in.",
              COUNT, (Query(f"sum by (instance) (increase(leadgen_rebalances_total{{{INST}}}[$__rate_interval]))",
                            "{{instance}}"),), width=6),
        Panel("Assigned partitions", "Partitions each worker owns, per topic.",
              COUNT, (Query(f"sum by (instance, topic) (leadgen_assigned_partitions{{{INST}}})",
                            "{{instance}} {{topic}}"),), width=6),
    ))
    throughput = Row("Throughput and rejections", (
        Panel("Valid events per second by topic", "Valid, first-seen input events counted per second.",
              PER_SECOND, (Query(f"sum by (topic) (rate(leadgen_events_total{{{INST}}}[$__rate_interval]))",
                                 "{{topic}}"),), width=8),
        Panel("Rejected and duplicate events per second",
              "Input dead-lettered, by reason (late included), and input ignored as a repeated event_id.",
              PER_SECOND, (
                  Query(f"sum by (topic, reason) (rate(leadgen_events_rejected_total{{{INST}}}[$__rate_interval]))",
                        "rejected {{reason}} ({{topic}})"),
                  Query(f"sum by (topic) (rate(leadgen_events_duplicate_total{{{INST}}}[$__rate_interval]))",
                        "duplicate ({{topic}})"),
              ), width=8),
        Panel("Share of input dead-lettered, late, duplicate",
              "Over every worker, the last 5 minutes. Alerts: DeadLetterRateHigh above 5 %, LateEventRateHigh above "
              "1 %.",
              RATIO, (
                  Query("leadgen:events_dead_lettered:ratio_rate5m", "dead-lettered (invalid)"),
                  Query("leadgen:events_late:ratio_rate5m", "late"),
                  Query("leadgen:events_duplicate:ratio_rate5m", "duplicate"),
              ), width=8, field_config={"min": 0}),
        Panel("KPI records sent per second", "Records sent to the kpi-* topics.",
              PER_SECOND, (Query(f"sum by (topic) (rate(leadgen_kpi_records_total{{{INST}}}[$__rate_interval]))",
                                 "{{topic}}"),), width=8),
        Panel("Batch duration, 99th percentile", "Time to process one batch, per pipeline stage.",
              SECONDS, (Query(f"histogram_quantile(0.99, sum by (le, stage) "
                              f"(rate(leadgen_batch_duration_seconds_bucket{{{INST}}}[$__rate_interval])))",
                              "{{stage}}"),), width=8),
        Panel("Leads waiting for their stage changes",
              "Leads whose stage changes arrived before the lead itself.",
              COUNT, (Query(f"sum(leadgen_pending_leads{{{INST}}})", "pending"),), width=8),
    ))
    lag = Row("Lag and event time", (
        Panel("Consumer lag by topic", "Messages not processed yet, over the selected workers (ConsumerLagHigh above "
              "10,000).",
              COUNT, (Query(f"sum by (topic) (leadgen_consumer_lag_messages{{{INST}}})", "{{topic}}"),), width=8),
        Panel("Watermark delay", "How far each stage's event-time watermark is behind the clock: how late results "
              "become final (WatermarkStalled).",
              SECONDS, (Query(f"time() - leadgen_watermark_timestamp_seconds{{{INST}}}",
                              "{{instance}} {{stage}}"),), width=8),
        Panel("Event-time delay of the newest input", "How far the newest event read from each input topic is "
              "behind the clock.",
              SECONDS, (Query(f"time() - max by (topic) (leadgen_last_event_timestamp_seconds{{{INST}}})",
                              "{{topic}}"),), width=8),
    ))
    return _dashboard(
        "leadgen-pipeline", "Lead-gen pipeline health",
        "Workers, throughput, rejected, duplicate and late input, lag, watermark delay and rebalances.",
        [_query_variable("instance", "Worker", 'label_values(up{job="leadgen-kpi"}, instance)')],
        (workers, throughput, lag))


DASHBOARDS = {"leadgen-kpis.json": kpi_dashboard, "leadgen-pipeline.json": pipeline_dashboard}


def render(dashboard: dict[str, Any]) -> str:
    """The file content of a dashboard: two-space JSON, keys in the order built, one trailing newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT / name).write_text(render(build()), encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
