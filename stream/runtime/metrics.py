"""The Prometheus metrics of a worker, as one typed bundle on an injected registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from stream.core.calendar import size_label
from stream.core.cells import FUNNEL, CellId, CellState
from stream.core.kpis import CONVERSION_TIME_BUCKETS, FUNNEL_RATIOS, KpiRecord, Quotient, step_conversions
from stream.core.money import micros_to_float
from stream.core.targets import Target
from stream.core.timeutil import parse_event_time
from stream.pipeline.counts import BatchCounts

ALL = "all"  # label value of the all-traffic roll-up
TARGET_LABELS = ["target_kpi", "period", "bound", "channel", "campaign"]
OTHER = "other"  # label value that folded campaigns and channels share

# Batch processing takes from a millisecond (a handful of events) to seconds (a
# full batch of a backlog, or a state scan after a rebalance).
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LabelFolder:
    """Bounds a label's values: an allow-list, or else the first ``limit`` values seen; the rest are ``other``."""

    allowed: frozenset[str]
    limit: int
    _seen: set[str] = field(default_factory=set)

    def fold(self, value: str | None) -> str:
        """The label value to use for ``value``."""
        if value is None:
            return ""
        if self.allowed:
            return value if value in self.allowed else OTHER
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


@dataclass
class Metrics:
    """Every metric a worker exports (README, section Metrics, says what each means)."""

    events: Counter
    rejected: Counter
    duplicates: Counter
    leads: Counter
    stage_entries: Counter
    spend: Counter
    late_contributions: Counter
    replayed_deltas: Counter
    folded_deltas: Counter
    kpi_records: Counter
    cost_per_lead: Gauge
    conversion_ratio: Gauge
    cost_per_mql: Gauge
    cost_per_acquisition: Gauge
    win_ratio: Gauge
    return_on_ad_spend: Gauge
    time_to_conversion: Histogram
    watermark: Gauge
    last_event_time: Gauge
    pending_stage_changes: Gauge
    batch_seconds: Histogram
    rebalances: Counter
    assigned_partitions: Gauge
    ready: Gauge
    consumer_lag: Gauge
    target: Gauge
    target_attainment: Gauge
    target_pacing: Gauge
    target_elapsed: Gauge
    campaigns: LabelFolder
    channels: LabelFolder
    _latest_start: dict[tuple[str | None, int], int] = field(default_factory=dict)
    _latest_target_start: dict[Target, int] = field(default_factory=dict)
    _shown: dict[tuple[Gauge, tuple[str, ...]], Gauge] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry, campaign_labels: frozenset[str], campaign_label_limit: int,
               channel_label_limit: int = 50) -> Metrics:
        """Register every metric on ``registry``."""
        # Longer than a function should be, because it is a list: one declaration per metric, each with its name,
        # help text and labels, read as the catalogue of what the worker exports (the README's metrics table).
        # The *_created series double the output and mean nothing to PromQL here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        return cls(
            events=Counter("leadgen_events", "Valid, first-seen input events.", ["topic"], registry=registry),
            rejected=Counter("leadgen_events_rejected", "Input events refused and dead-lettered, by reason.",
                             ["topic", "reason"], registry=registry),
            duplicates=Counter("leadgen_events_duplicate", "Input events ignored as a repeated event_id.",
                               ["topic"], registry=registry),
            leads=Counter("leadgen_leads", "Leads created (first arrival of each lead).", ["channel", "campaign"],
                          registry=registry),
            stage_entries=Counter("leadgen_stage_entries", "Leads entering a funnel stage for the first time.",
                                  ["stage", "channel"], registry=registry),
            spend=Counter("leadgen_spend", "Spend, in the reporting currency.", ["channel", "campaign"],
                          registry=registry),
            late_contributions=Counter(
                "leadgen_late_contributions",
                "Lead contributions that fell in a window already final (a lead's other events came too late).",
                ["family"], registry=registry),
            replayed_deltas=Counter("leadgen_replayed_deltas",
                                    "Cell updates recognised as replays after a restart and skipped.",
                                    registry=registry),
            folded_deltas=Counter("leadgen_folded_deltas",
                                  "Cell updates whose channel, campaign, page or owner went to `other` "
                                  "(KPI_VALUE_LIMIT).", registry=registry),
            kpi_records=Counter("leadgen_kpi_records", "KPI records sent, by topic.", ["topic"], registry=registry),
            cost_per_lead=Gauge("leadgen_cost_per_lead",
                                "Cost per lead of the latest event-time window of each size, in the reporting "
                                "currency; absent while the window has no leads.", ["channel", "window"],
                                registry=registry),
            conversion_ratio=Gauge("leadgen_conversion_ratio",
                                   "Leads entering to_stage / leads entering from_stage in the latest event-time "
                                   "window of each size; absent while the denominator is zero.",
                                   ["from_stage", "to_stage", "channel", "window"], registry=registry),
            cost_per_mql=Gauge("leadgen_cost_per_mql", "Spend / leads entering MQL in the latest window of each size; "
                               "absent while there are none.", ["channel", "window"], registry=registry),
            cost_per_acquisition=Gauge("leadgen_cost_per_acquisition",
                                       "Spend / leads won (CAC) in the latest window of each size; absent while none "
                                       "were won.", ["channel", "window"], registry=registry),
            win_ratio=Gauge("leadgen_win_ratio", "Won / (won + lost) closed in the latest window of each size.",
                            ["channel", "window"], registry=registry),
            return_on_ad_spend=Gauge("leadgen_return_on_ad_spend_ratio",
                                     "Won revenue / spend in the latest window of each size (ROAS).",
                                     ["channel", "window"], registry=registry),
            time_to_conversion=Histogram(
                "leadgen_time_to_conversion_seconds",
                "Time from entering from_stage to entering to_stage, observed when a lead enters to_stage.",
                ["from_stage", "to_stage", "channel"], buckets=CONVERSION_TIME_BUCKETS, registry=registry),
            watermark=Gauge("leadgen_watermark_timestamp_seconds",
                            "Event-time watermark of a stage (Unix seconds): windows ending before it minus the "
                            "allowed lateness are final.", ["stage"], registry=registry),
            last_event_time=Gauge("leadgen_last_event_timestamp_seconds",
                                  "Latest event time read from each input topic (Unix seconds).", ["topic"],
                                  registry=registry),
            pending_stage_changes=Gauge("leadgen_pending_leads",
                                        "Leads whose stage changes wait for the lead itself to arrive.",
                                        registry=registry),
            batch_seconds=Histogram("leadgen_batch_duration_seconds", "Time to process one batch, per stage.",
                                    ["stage"], buckets=BATCH_SECONDS_BUCKETS, registry=registry),
            rebalances=Counter("leadgen_rebalances", "Consumer group rebalances this worker took part in.",
                               registry=registry),
            assigned_partitions=Gauge("leadgen_assigned_partitions", "Partitions assigned to this worker, by topic.",
                                      ["topic"], registry=registry),
            ready=Gauge("leadgen_worker_ready", "1 once the worker has recovered its state and processes events; 0 "
                        "from a rebalance until its tables are recovered again.", registry=registry),
            consumer_lag=Gauge("leadgen_consumer_lag_messages",
                               "Messages in the partitions this worker owns that it has not processed yet, by topic.",
                               ["topic"], registry=registry),
            # Labelled by the targets of KPI_TARGETS_FILE: a short list a team writes, so the values are bounded.
            target=Gauge("leadgen_target", "Each target of KPI_TARGETS_FILE: the value its KPI is to reach (bound "
                         "at_least) or stay under (bound at_most) per period, in the KPI's unit.", TARGET_LABELS,
                         registry=registry),
            target_attainment=Gauge("leadgen_target_attainment_ratio",
                                    "A target's KPI / the target, in the latest window of its period; absent while "
                                    "the KPI has no value there.", TARGET_LABELS, registry=registry),
            target_pacing=Gauge("leadgen_target_pacing_ratio",
                                "Attainment / the share of the period the watermark has passed (on pace at 1), for "
                                "a KPI that accumulates; the attainment itself for a ratio KPI.", TARGET_LABELS,
                                registry=registry),
            target_elapsed=Gauge("leadgen_target_elapsed_ratio",
                                 "The share of the latest window of each target period the watermark has passed "
                                 "(the pacing alert's guard).", ["period"], registry=registry),
            campaigns=LabelFolder(campaign_labels, campaign_label_limit),
            channels=LabelFolder(frozenset(), channel_label_limit),
        )

    def declare_targets(self, targets: Iterable[Target]) -> None:
        """Publish the configured targets (what the cost-per-lead alert compares with)."""
        for target in targets:
            self.target.labels(*_target_labels(target)).set(float(target.value))

    def forget_targets(self) -> None:
        """Drop the attainment and pacing series: partitions taken from this worker may hold targets' cells, whose
        new owner reports them from its next batch (two workers' series of one target would disagree)."""
        for gauge in (self.target_attainment, self.target_pacing, self.target_elapsed):
            gauge.clear()
        self._shown = {key: child for key, child in self._shown.items()
                       if key[0] not in (self.target_attainment, self.target_pacing)}
        self._latest_target_start.clear()

    def show_targets(self, shown: Iterable[tuple[Target, KpiRecord]]) -> None:
        """Point the target gauges at the latest window of each target's period."""
        for target, item in shown:
            start = item.record["window"]["start"]
            record = item.record
            start_ms = parse_event_time(start)
            if start_ms < self._latest_target_start.get(target, start_ms):
                continue
            self._latest_target_start[target] = start_ms
            labels = _target_labels(target)
            gauge = self.target_attainment if record["kpi"] == "target_attainment" else self.target_pacing
            self._show(gauge, labels, record["value"])
            if record["kpi"] == "target_pacing" and target.cumulative:
                self.target_elapsed.labels(size_label(target.period)).set(record["denominator"])

    def count(self, counts: BatchCounts) -> None:
        """Publish one batch's counts."""
        for topic, n in counts.valid.items():
            self.events.labels(topic).inc(n)
        for topic, n in counts.duplicate.items():
            self.duplicates.labels(topic).inc(n)
        for (topic, reason), n in counts.rejected.items():
            self.rejected.labels(topic, reason).inc(n)
        for (channel, campaign), n in counts.leads.items():
            self.leads.labels(self.channels.fold(channel), self.campaigns.fold(campaign)).inc(n)
        for (stage, channel), n in counts.stage_entries.items():
            self.stage_entries.labels(stage, self.channels.fold(channel)).inc(n)
        for (channel, campaign), micros in counts.spend_micros.items():
            self.spend.labels(self.channels.fold(channel), self.campaigns.fold(campaign)).inc(
                micros_to_float(micros))
        for family, n in counts.late_contributions.items():
            self.late_contributions.labels(family).inc(n)
        if counts.replayed_deltas:
            self.replayed_deltas.inc(counts.replayed_deltas)
        if counts.folded_deltas:
            self.folded_deltas.inc(counts.folded_deltas)
        for from_stage, to_stage, channel, duration_ms in counts.conversion_samples:
            self.time_to_conversion.labels(from_stage, to_stage, self.channels.fold(channel)).observe(
                duration_ms / 1000)

    def show_last_event_times(self, observed: Sequence[tuple[str, int]]) -> None:
        """Each input topic's last event time: the time of its last event in a batch's ``(topic:partition, ms)``
        list, set once per topic (a label look-up per event was a percent of a backlog's CPU)."""
        seen: set[str] = set()
        shown: set[str] = set()
        for source, ts in reversed(observed):
            if source not in seen:
                seen.add(source)
                topic = source.rsplit(":", 1)[0]
                if topic not in shown:
                    shown.add(topic)
                    self.last_event_time.labels(topic).set(ts / 1000)

    def show_cells(self, cells: Iterable[tuple[CellId, CellState]], funnel: tuple[str, ...]) -> None:
        """Point the KPI gauges at the latest window of each size, per channel and for all traffic.

        The values are the core's, as the KPI records of the same cell carry them (``FUNNEL_RATIOS``).
        """
        ratio_gauges = self._funnel_ratio_gauges()
        for cell, state in cells:
            # Conversion-time cells feed the histogram (see count), not gauges.
            if cell.family != FUNNEL or cell.campaign is not None:
                continue
            latest_key = (cell.channel, cell.size)
            if cell.start_ms < self._latest_start.get(latest_key, cell.start_ms):
                continue
            self._latest_start[latest_key] = cell.start_ms
            channel = ALL if cell.channel is None else self.channels.fold(cell.channel)
            window = size_label(cell.size)
            for gauge, quotient_of in ratio_gauges:
                self._show(gauge, (channel, window), quotient_of(state).value)
            for from_stage, to_stage, conversion in step_conversions(state, funnel):
                self._show(self.conversion_ratio, (from_stage, to_stage, channel, window), conversion.value)

    def _show(self, gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
        """Set a KPI gauge's series, or remove it where the KPI has no value."""
        # The labelled child is kept: Gauge.labels() and remove() cost about a
        # microsecond each (label check, lock), and this runs ten times per cell.
        # Only this method adds or removes series of the KPI gauges, so the
        # children kept are exactly the series exported.
        key = (gauge, labels)
        if value is None:
            if self._shown.pop(key, None) is not None:
                gauge.remove(*labels)
            return
        child = self._shown.get(key)
        if child is None:
            child = self._shown[key] = gauge.labels(*labels)
        child.set(value)

    def _funnel_ratio_gauges(self) -> tuple[tuple[Gauge, Callable[[CellState], Quotient]], ...]:
        """Each ratio gauge with the core's definition of the KPI it shows (KPI record names differ in two)."""
        return ((self.cost_per_lead, FUNNEL_RATIOS["cost_per_lead"]),
                (self.cost_per_mql, FUNNEL_RATIOS["cost_per_mql"]),
                (self.cost_per_acquisition, FUNNEL_RATIOS["cost_per_acquisition"]),
                (self.win_ratio, FUNNEL_RATIOS["win_rate"]),
                (self.return_on_ad_spend, FUNNEL_RATIOS["roas"]))


def _target_labels(target: Target) -> tuple[str, str, str, str, str]:
    named = dict(target.dimensions)
    kpi = f"{target.kpi}:{named['from_stage']}>{named['to_stage']}" if "from_stage" in named else target.kpi
    return (kpi, size_label(target.period), target.bound, named.get("channel", ALL), named.get("campaign", ""))
