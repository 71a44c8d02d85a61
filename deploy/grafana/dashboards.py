"""The Grafana dashboards as code: ``python deploy/grafana/dashboards.py`` writes deploy/grafana/dashboards/*.json.

Built with Grafana's typed builders for its own dashboard model (grafana-foundation-sdk, the Grafana 11.6 line;
schemaVersion 41, which Grafana 12 loads as is). tests/ops/test_dashboards.py fails when the committed JSON
differs from what this writes, and lints it; tests/ops/test_prometheus_live.py runs every query against a real
Prometheus scraping a real worker.

Every query reads Prometheus through the ``$datasource`` variable (the provisioned data source has the fixed uid
``leadgen-prometheus``), no query names an instance, and every panel has a unit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import prometheus as promql
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    LineStyle,
    ReduceDataOptions,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "leadgen-kpi"
FUNNEL = ("lead", "mql", "sal", "sql", "opportunity", "won")  # KPI_FUNNEL's default
HEIGHT = 8

# Grafana unit ids. Money is in the reporting currency, KPI_REPORTING_CURRENCY, USD by default.
MONEY = "currencyUSD"
RATIO = "percentunit"
SECONDS = "s"
COUNT = "short"
PER_SECOND = "cps"
STATE = "none"

# The panel builders (timeseries.Panel, stat.Panel ...) share their common options but no base class.
P = TypeVar("P", timeseries.Panel, stat.Panel, bargauge.Panel, table.Panel)

# ------------------------------------------------------------------------------------------------- building blocks


def _query(expr: str, legend: str = "", *, instant: bool = False) -> promql.Dataquery:
    """One PromQL target; its refId is given by the panel."""
    query = promql.Dataquery().expr(expr).legend_format(legend or "__auto").editor_mode(QueryEditorMode.CODE)
    return query.datasource(DATASOURCE).instant() if instant else query.datasource(DATASOURCE).range()


def _panel(panel: P, title: str, description: str, unit: str, queries: Sequence[promql.Dataquery],
           width: int) -> P:
    """What every panel has: title, description, unit, size, the templated data source, targets A, B, C ..."""
    for ref_id, query in zip("ABCDEFGHIJ", queries, strict=False):
        panel.with_target(query.ref_id(ref_id))
    return panel.title(title).description(description).unit(unit).datasource(DATASOURCE).span(width).height(HEIGHT)


def _timeseries(title: str, description: str, unit: str, *queries: promql.Dataquery,
                width: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel()
             .legend(VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
             .draw_style(common.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
             .show_points(common.VisibilityMode.NEVER).span_nulls(False))
    return _panel(panel, title, description, unit, queries, width)


def _last_value() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def _stat(title: str, description: str, unit: str, *queries: promql.Dataquery, width: int) -> stat.Panel:
    panel = (stat.Panel().reduce_options(_last_value()).color_mode(common.BigValueColorMode.VALUE)
             .graph_mode(common.BigValueGraphMode.NONE).justify_mode(common.BigValueJustifyMode.AUTO)
             .orientation(common.VizOrientation.AUTO).text_mode(common.BigValueTextMode.AUTO))
    return _panel(panel, title, description, unit, queries, width)


def _bargauge(title: str, description: str, unit: str, *queries: promql.Dataquery, width: int) -> bargauge.Panel:
    panel = (bargauge.Panel().reduce_options(_last_value()).display_mode(common.BarGaugeDisplayMode.GRADIENT)
             .orientation(common.VizOrientation.HORIZONTAL).show_unfilled(True)
             .value_mode(common.BarGaugeValueMode.COLOR).min(0))
    return _panel(panel, title, description, unit, queries, width)


def _table(title: str, description: str, unit: str, *queries: promql.Dataquery, width: int) -> table.Panel:
    tabular = [query.format(PromQueryFormat.TABLE) for query in queries]
    panel = table.Panel().show_header(True).cell_height(common.TableCellHeight.SM)
    return _panel(panel, title, description, unit, tabular, width)


def _alert_line(panel: timeseries.Panel, value: float) -> timeseries.Panel:
    """A red line at ``value``, an alert's threshold."""
    steps = [model.Threshold(value=None, color="green"), model.Threshold(value=value, color="red")]
    return (panel.thresholds(ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
            .thresholds_style(GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)))


def _states(zero: tuple[str, str], one: tuple[str, str]) -> list[model.ValueMapping]:
    """Value mappings of a 0/1 gauge: (text, colour) for each."""
    return [model.ValueMap(options={"0": model.ValueMappingResult(text=zero[0], color=zero[1], index=0),
                                    "1": model.ValueMappingResult(text=one[0], color=one[1], index=1)})]


_DASHED = model.DynamicConfigValue(id_val="custom.lineStyle", value=LineStyle().fill("dash").dash([10, 10]).build())


def _query_variable(name: str, label: str, query: str) -> QueryVariable:
    """A multi-value variable with "All" as ``.*``, so that every query can filter with ``=~"$name"``."""
    return (QueryVariable(name).label(label).datasource(DATASOURCE).query({"query": query, "refId": f"{name}-values"})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
            .include_all(True).all_value(".*").multi(True).hide(model.VariableHide.DONT_HIDE).options([]).regex("")
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"])))


def _dashboard(uid: str, title: str, description: str, variables: Sequence[QueryVariable],
               rows: Sequence[tuple[str, Sequence[Builder[model.Panel]]]]) -> model.Dashboard:
    """A dashboard of rows; the builder lays the panels out left to right under each row, wrapping at 24 columns."""
    builder = (Dashboard(title).uid(uid).description(description).tags([TAG]).timezone("utc").readonly()
               .tooltip(model.DashboardCursorSync.CROSSHAIR).refresh("30s").version(1).time("now-6h", "now")
               .annotations([])
               .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus")
                              .hide(model.VariableHide.DONT_HIDE))
               .link(DashboardLink("Lead-gen dashboards").type(model.DashboardLinkType.DASHBOARDS).tags([TAG])
                     .as_dropdown(False).include_vars(False).keep_time(True)))
    for variable in variables:
        builder.with_variable(variable)
    for row_title, panels in rows:
        # Panels follow their row instead of nesting in it: Grafana only shows a row's own panels when collapsed.
        builder.with_row(Row(row_title).collapsed(False))
        for panel in panels:
            builder.with_panel(panel)
    dashboard = builder.build()
    for panel_id, placed in enumerate(dashboard.panels or [], start=1):
        placed.id_val = panel_id  # unique within the dashboard; the builders leave ids to Grafana
    return dashboard


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


def kpi_dashboard() -> model.Dashboard:
    """Lead-gen KPIs: cost per lead with its baseline and target, spend and leads, the funnel, time to conversion."""
    cost = [
        _timeseries("Cost per lead, trailing hour, with 7-day baseline and target",
                    "Spend ÷ leads over the last hour per channel (solid), the channel's baseline: the same ratio over "
                    "the 7 days ending an hour ago (dashed), and its cost_per_lead target (the workers' "
                    "KPI_TARGETS_FILE). CostPerLeadSpike fires at twice the baseline on at least 20 leads an hour.",
                    MONEY,
                    _query(f"channel:leadgen_cost_per_lead:ratio_rate1h{{{CH}}}", "{{channel}}"),
                    _query(f"channel:leadgen_cost_per_lead:ratio_avg7d_offset1h{{{CH}}}", "{{channel}} baseline (7 d)"),
                    _query(f"channel:leadgen_cost_per_lead_target:usd{{{CH}}}", "{{channel}} target"),
                    width=16).override_by_regexp(".* (baseline|target).*", [_DASHED]),
        _stat("Blended cost per lead of the selection",
              "All spend ÷ all leads of the selected channels and campaigns (leads without spend, such as organic "
              "ones, count), over the trailing hour and day.",
              MONEY,
              _query(f"sum(channel_campaign:leadgen_spend:increase1h{{{CH_CAMP}}}) / "
                     f"(sum(channel_campaign:leadgen_leads:increase1h{{{CH_CAMP}}}) > 0)", "trailing hour"),
              _query(f"sum(increase(leadgen_spend_total{{{CH_CAMP}}}[1d])) / "
                     f"(sum(increase(leadgen_leads_total{{{CH_CAMP}}}[1d])) > 0)", "trailing day"),
              width=8),
        _alert_line(_timeseries("Cost per lead ÷ 7-day baseline",
                                "The trailing hour's cost per lead as a share of the channel's baseline; the red line "
                                "is CostPerLeadSpike's threshold (200 %).",
                                RATIO,
                                _query(f"channel:leadgen_cost_per_lead_vs_baseline:ratio{{{CH}}}", "{{channel}}"),
                                width=8), 2),
        _timeseries("Cost per lead by campaign, trailing hour", "Spend ÷ leads over the last hour per channel and "
                    "campaign.",
                    MONEY, _query(f"channel_campaign:leadgen_cost_per_lead:ratio_rate1h{{{CH_CAMP}}}",
                                  "{{channel}} / {{campaign}}"), width=8),
        _timeseries("Cost per lead, trailing day", "Spend ÷ leads over the last 24 hours per channel.",
                    MONEY, _query(f"channel:leadgen_cost_per_lead:ratio_rate1d{{{CH}}}", "{{channel}}"), width=8),
    ]
    volume = [
        _timeseries("Spend, trailing hour", "Spend booked over the last hour per channel (selected campaigns).",
                    MONEY, _query(f"sum by (channel) (channel_campaign:leadgen_spend:increase1h{{{CH_CAMP}}})",
                                  "{{channel}}"), width=9),
        _timeseries("Leads, trailing hour", "Leads created over the last hour per channel (selected campaigns).",
                    COUNT, _query(f"sum by (channel) (channel_campaign:leadgen_leads:increase1h{{{CH_CAMP}}})",
                                  "{{channel}}"), width=9),
        _stat("Spend in the time range", "Spend of the selection over the dashboard's time range.",
              MONEY, _query(f"sum(increase(leadgen_spend_total{{{CH_CAMP}}}[$__range]))", "spend", instant=True),
              width=3),
        _stat("Leads in the time range", "Leads of the selection created over the dashboard's time range.",
              COUNT, _query(f"sum(increase(leadgen_leads_total{{{CH_CAMP}}}[$__range]))", "leads", instant=True),
              width=3),
    ]
    funnel = [
        _bargauge("Leads entering each stage in the time range",
                  "Leads of the selected channels entering each funnel stage for the first time (lost is outside the "
                  "funnel).",
                  COUNT, _query(f'sort_desc(sum by (stage) (increase(leadgen_stage_entries_total{{{CH}, stage!="lost"}}'
                                f"[$__range])))", "{{stage}}", instant=True), width=8),
        _timeseries("Conversion by funnel step, trailing hour",
                    "Leads entering the later stage ÷ leads entering the earlier one over the last hour, summed over "
                    "the selected channels (a ratio of sums).",
                    RATIO, _query(" or ".join(_step_conversion(a, b) for a, b in zip(FUNNEL, FUNNEL[1:], strict=False)),
                                  "{{step}}"), width=8).min(0),
        _table("Conversion by channel and step, trailing hour",
               "Each channel's conversion of each funnel step over the last hour (rows: channels; columns: the "
               "stage converted to).",
               RATIO, _query(f"channel_step:leadgen_stage_conversion:ratio_rate1h{{{CH}}}", instant=True),
               width=8).with_transformation(model.DataTransformerConfig(id_val="groupingToMatrix", options={
                   "columnField": "to_stage", "rowField": "channel", "valueField": "Value"})),
        _timeseries("Time to conversion, median, trailing hour",
                    "Median time from entering a stage to entering the next, over the selected channels.",
                    SECONDS, _query(_ttc_quantile(0.5), "{{from_stage}} → {{to_stage}}")),
        _timeseries("Time to conversion, 90th percentile, trailing hour",
                    "90th percentile of the time from entering a stage to entering the next, over the selected "
                    "channels.",
                    SECONDS, _query(_ttc_quantile(0.9), "{{from_stage}} → {{to_stage}}")),
    ]
    periods = [
        _timeseries("Cost per lead in the current window of each period",
                    "Spend ÷ leads in the event-time window in progress of each size of KPI_WINDOW_SIZES (the period "
                    "selector: day, week, month, quarter ... in KPI_TIMEZONE), per channel: what the KPI records of "
                    "that window say.",
                    MONEY, _query(f'max by (channel, window) (leadgen_cost_per_lead{{{CH}, window=~"$period"}})',
                                  "{{channel}} {{window}}")),
        _timeseries("Conversion by funnel step in the current window of each period",
                    "Leads entering the later stage ÷ leads entering the earlier one in the event-time window in "
                    "progress of each selected period, per selected channel (channel all: all traffic).",
                    RATIO, _query(f'max by (channel, from_stage, to_stage, window) '
                                  f'(leadgen_conversion_ratio{{{CH}, window=~"$period"}})',
                                  "{{channel}} {{from_stage}} → {{to_stage}} {{window}}")).min(0),
        _bargauge("Targets: attainment",
                  "Each target's KPI ÷ the target in the latest window of its period (KPI_TARGETS_FILE): 1 reached. "
                  "For an at_most target (a cost per lead ceiling) under 1 is good.",
                  RATIO, _query(f'max by (target_kpi, period, bound, channel, campaign) '
                                f'(leadgen_target_attainment_ratio{{{CH}, period=~"$period"}})',
                                "{{target_kpi}} {{channel}} {{campaign}} per {{period}} ({{bound}})", instant=True),
                  width=12),
        _alert_line(_timeseries("Targets: pacing",
                                "Attainment ÷ the share of the period the watermark has passed, for targets whose KPI "
                                "accumulates (on pace at 100 %). The red line is TargetBehindPace's threshold (80 %), "
                                "which waits for a fifth of the period.",
                                RATIO, _query(f'target:leadgen_target_pacing:ratio{{{CH}, bound="at_least", '
                                              f'period=~"$period"}}',
                                              "{{target_kpi}} {{channel}} {{campaign}} per {{period}}")), 0.8),
    ]
    return _dashboard(
        "leadgen-kpis", "Lead-gen KPIs",
        "Cost per lead, spend, leads, funnel conversion and time to conversion, live from the KPI workers; KPIs "
        "per calendar period and the team's targets.",
        [_query_variable("channel", "Channel", "label_values(leadgen_leads_total, channel)"),
         _query_variable("campaign", "Campaign", 'label_values(leadgen_leads_total{channel=~"$channel"}, campaign)'),
         _query_variable("period", "Period", "label_values(leadgen_cost_per_lead, window)")],
        [("Cost per lead", cost), ("Spend and leads", volume), ("Funnel", funnel),
         ("Calendar periods and targets", periods)])


# ------------------------------------------------------------------------------------------ Pipeline health

INST = 'instance=~"$instance"'


def pipeline_dashboard() -> model.Dashboard:
    """Pipeline health: workers, throughput, rejections, lag, watermark delay, rebalances."""
    workers = [
        _stat("Worker up", "Whether Prometheus scrapes each worker (WorkerDown, NoWorkerUp).",
              STATE, _query(f'up{{job="leadgen-kpi", {INST}}}', "{{instance}}"), width=6)
        .mappings(_states(("DOWN", "red"), ("UP", "green"))),
        _stat("Worker ready", "1 once a worker has recovered its state and processes events.",
              STATE, _query(f"leadgen_worker_ready{{{INST}}}", "{{instance}}"), width=6)
        .mappings(_states(("NOT READY", "orange"), ("READY", "green"))),
        _timeseries("Rebalances", "Consumer-group rebalances each worker took part in.",
                    COUNT, _query(f"sum by (instance) (increase(leadgen_rebalances_total{{{INST}}}[$__rate_interval]))",
                                  "{{instance}}"), width=6),
        _timeseries("Assigned partitions", "Partitions each worker owns, per topic.",
                    COUNT, _query(f"sum by (instance, topic) (leadgen_assigned_partitions{{{INST}}})",
                                  "{{instance}} {{topic}}"), width=6),
    ]
    throughput = [
        _timeseries("Valid events per second by topic", "Valid, first-seen input events counted per second.",
                    PER_SECOND, _query(f"sum by (topic) (rate(leadgen_events_total{{{INST}}}[$__rate_interval]))",
                                       "{{topic}}"), width=8),
        _timeseries("Rejected and duplicate events per second",
                    "Input dead-lettered, by reason (late included), and input ignored as a repeated event_id.",
                    PER_SECOND,
                    _query(f"sum by (topic, reason) (rate(leadgen_events_rejected_total{{{INST}}}[$__rate_interval]))",
                           "rejected {{reason}} ({{topic}})"),
                    _query(f"sum by (topic) (rate(leadgen_events_duplicate_total{{{INST}}}[$__rate_interval]))",
                           "duplicate ({{topic}})"),
                    width=8),
        _timeseries("Share of input dead-lettered, late, duplicate",
                    "Over every worker, the last 5 minutes. Alerts: DeadLetterRateHigh above 5 %, LateEventRateHigh "
                    "above 1 %.",
                    RATIO,
                    _query("leadgen:events_dead_lettered:ratio_rate5m", "dead-lettered (invalid)"),
                    _query("leadgen:events_late:ratio_rate5m", "late"),
                    _query("leadgen:events_duplicate:ratio_rate5m", "duplicate"),
                    width=8).min(0),
        _timeseries("KPI records sent per second", "Records sent to the kpi-* topics.",
                    PER_SECOND, _query(f"sum by (topic) (rate(leadgen_kpi_records_total{{{INST}}}[$__rate_interval]))",
                                       "{{topic}}"), width=8),
        _timeseries("Batch duration, 99th percentile", "Time to process one batch, per pipeline stage.",
                    SECONDS, _query(f"histogram_quantile(0.99, sum by (le, stage) "
                                    f"(rate(leadgen_batch_duration_seconds_bucket{{{INST}}}[$__rate_interval])))",
                                    "{{stage}}"), width=8),
        _timeseries("Leads waiting for their stage changes",
                    "Leads whose stage changes arrived before the lead itself.",
                    COUNT, _query(f"sum(leadgen_pending_leads{{{INST}}})", "pending"), width=8),
    ]
    lag = [
        _timeseries("Consumer lag by topic", "Messages not processed yet, over the selected workers "
                    "(ConsumerLagHigh above 10,000).",
                    COUNT, _query(f"sum by (topic) (leadgen_consumer_lag_messages{{{INST}}})", "{{topic}}"), width=8),
        _timeseries("Watermark delay", "How far each stage's event-time watermark is behind the clock: how late "
                    "results become final (WatermarkStalled).",
                    SECONDS, _query(f"time() - leadgen_watermark_timestamp_seconds{{{INST}}}",
                                    "{{instance}} {{stage}}"), width=8),
        _timeseries("Event-time delay of the newest input", "How far the newest event read from each input topic is "
                    "behind the clock.",
                    SECONDS, _query(f"time() - max by (topic) (leadgen_last_event_timestamp_seconds{{{INST}}})",
                                    "{{topic}}"), width=8),
    ]
    return _dashboard(
        "leadgen-pipeline", "Lead-gen pipeline health",
        "Workers, throughput, rejected, duplicate and late input, lag, watermark delay and rebalances.",
        [_query_variable("instance", "Worker", 'label_values(up{job="leadgen-kpi"}, instance)')],
        [("Workers", workers), ("Throughput and rejections", throughput), ("Lag and event time", lag)])


DASHBOARDS = {"leadgen-kpis.json": kpi_dashboard, "leadgen-pipeline.json": pipeline_dashboard}


def render(dashboard: model.Dashboard) -> str:
    """The file content of a dashboard: two-space JSON in the SDK's key order, one trailing newline."""
    return json.dumps(dashboard, cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT / name).write_text(render(build()), encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
