"""The bench's figures without a broker: percentiles, multi-worker accounting, peak RSS and probe matching."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from stream.bench import (
    PROBE_CAMPAIGN,
    PROBE_CHANNEL,
    SETTLE_S,
    BenchError,
    BenchOptions,
    FailoverResult,
    LatencyResult,
    PeakRss,
    PipelineResult,
    PipelineWatch,
    ProbeLog,
    Produced,
    Progress,
    Rate,
    RawResult,
    Restart,
    RestartStep,
    RestoreResult,
    Results,
    RollingResult,
    Timeline,
    TwoWorkerResult,
    all_ready,
    extra_events,
    percentiles_ms,
    probe_event,
    probe_in_record,
    probe_record,
    report,
    status_kb,
    stream_partitions,
)
from stream.bench.pipeline import store_bytes
from stream.bench.processes import cpu_seconds
from stream.core.cells import FUNNEL, CellState, cell_ids
from stream.core.events import Kind, Rejection
from stream.core.kpis import FAMILY_COST_PER_LEAD, changed_records
from stream.core.money import parse_rate_table
from stream.core.validation import Validator
from stream.core.windows import utc_windows

HOUR_MS = 3_600_000


def metrics_page(events: int = 0, rejected: int = 0, duplicates: int = 0, ready: int = 1,
                 partitions: dict[str, int] | None = None, lag: dict[str, int] | None = None) -> str:
    """A worker's /metrics page with the series the bench reads, spread over labels as the worker does."""
    registry = CollectorRegistry()
    valid = Counter("leadgen_events", "", ["topic"], registry=registry)
    valid.labels("page-views").inc(events - events // 2)
    valid.labels("leads").inc(events // 2)
    Counter("leadgen_events_rejected", "", ["topic", "reason"], registry=registry).labels(
        "leads", "invalid_json").inc(rejected)
    Counter("leadgen_events_duplicate", "", ["topic"], registry=registry).labels("leads").inc(duplicates)
    Gauge("leadgen_worker_ready", "", registry=registry).set(ready)
    assigned = Gauge("leadgen_assigned_partitions", "", ["topic"], registry=registry)
    for topic, count in (partitions or {}).items():
        assigned.labels(topic).set(count)
    unread = Gauge("leadgen_consumer_lag_messages", "", ["topic"], registry=registry)
    for topic, messages in (lag or {}).items():
        unread.labels(topic).set(messages)
    return generate_latest(registry).decode()


def watch(tmp_path: Path, ports: list[int], expected: int) -> PipelineWatch:
    return PipelineWatch(ports, expected, Progress(interval_s=3600), Timeline(tmp_path / "timeline.csv", "a,k,p"))


# ---- percentiles


@pytest.mark.parametrize(("latencies_us", "fractions", "expected"), [
    ([], (0.5, 0.99), [None, None]),
    ([7000], (0.5, 0.99), [7.0, 7.0]),
    ([1000 * n for n in range(1, 101)], (0.5, 0.99), [50.0, 99.0]),
    ([1000 * n for n in range(1, 11)], (0.5, 0.99), [5.0, 10.0]),  # rank ceil(9.9) = 10: the largest
    ([100, 200, 300, 400], (0.5,), [0.2]),  # nearest rank picks an observed value, never the mean of two
    ([1500, 2500], (0.01, 1.0), [1.5, 2.5]),
])
def test_percentiles_are_nearest_rank_in_milliseconds(latencies_us: list[int], fractions: tuple[float, ...],
                                                      expected: list[float | None]) -> None:
    assert percentiles_ms(latencies_us, fractions) == expected


# ---- probes


def test_probe_log_takes_each_probes_first_arrival_and_lists_the_missing() -> None:
    probes = ProbeLog()
    for number, at in ((0, 10.0), (1, 10.1), (2, 10.2), (3, 10.3)):
        probes.record_sent(number, at)
    probes.record_seen(1, 10.35)
    probes.record_seen(1, 10.9)  # the same probe's record of the other window size: later, ignored
    probes.record_seen(0, 10.75)
    probes.record_seen(3, 11.3)
    probes.record_seen(9, 11.0)  # never sent (an earlier run's campaign): not a latency
    assert probes.latencies_us() == [250_000, 750_000, 1_000_000]
    # At 10.5 probe 1 had been seen (after 0.25 s); 0, 2 and 3 were still waiting, for 0.5, 0.3 and 0.2 s.
    assert probes.waited_until_us(10.5) == [200_000, 250_000, 300_000, 500_000]
    assert probes.waited_until_us(10.15) == [50_000, 150_000]  # probes 2 and 3 were not sent yet
    assert probes.missing() == [2]
    assert percentiles_ms(probes.latencies_us(), (0.5,)) == [750.0]


def kpi_record(dimensions: object, kpi: str = "cost_per_lead") -> bytes:
    return orjson.dumps({"kpi": kpi, "window": {"size": "1h"}, "dimensions": dimensions, "value": None})


@pytest.mark.parametrize(("value", "expected"), [
    (kpi_record({"channel": "paid_search", "campaign": "probe-17"}), 17),
    (kpi_record({"channel": "email", "campaign": "probe-0"}), 0),
    (kpi_record({"channel": "paid_search", "campaign": "brand"}), None),
    (kpi_record({"channel": "paid_search"}), None),
    (kpi_record({}), None),
    (kpi_record({"channel": "probe-3"}), None),  # the name elsewhere than in the campaign
    (kpi_record({"channel": "probe-3", "campaign": "brand_42"}), None),  # a campaign ending in digits
    (kpi_record({"campaign": "probe-"}), None),
    (kpi_record({"campaign": "probe-1x"}), None),
    (kpi_record({"campaign": "probe-١"}), None),  # a non-ASCII digit
    (kpi_record({"campaign": 5}), None),
    (kpi_record(["probe-4"]), None),
    (b'["probe-4"]', None),
    (b"{probe-4", None),
    (b"", None),
    (None, None),
])
def test_probe_in_record_reads_the_campaign_dimension(value: bytes | None, expected: int | None) -> None:
    assert probe_in_record(value) == expected


def test_a_probe_is_a_valid_lead_and_its_cost_per_lead_record_is_recognised() -> None:
    now_ms = 1_795_000_000_000
    payload = probe_event(42, now_ms)
    event = Validator(parse_rate_table("USD", ""), 65536).validate(Kind.LEAD, payload)
    assert not isinstance(event, Rejection), event
    assert event.ts == now_ms and event.attrs["campaign"] == f"{PROBE_CAMPAIGN}42"
    found = set()
    for cell in cell_ids(FUNNEL, now_ms, PROBE_CHANNEL, f"{PROBE_CAMPAIGN}42", utc_windows((HOUR_MS, 24 * HOUR_MS))):
        state = CellState(counts={"lead": 1})
        for record in changed_records(cell, state, ("lead", "mql"), "USD", now_ms):
            if record.family == FAMILY_COST_PER_LEAD:
                found.add((cell.size, cell.campaign, probe_in_record(orjson.dumps(record.record))))
    # Both window sizes carry it at the campaign level; the roll-ups do not name the probe.
    assert found == {(HOUR_MS, "probe-42", 42), (24 * HOUR_MS, "probe-42", 42), (HOUR_MS, None, None),
                     (24 * HOUR_MS, None, None)}


@pytest.mark.parametrize(("value", "expected"), [
    (orjson.dumps({"kpi": "cost_per_lead", "dimensions": {"campaign": "probe-3"}, "denominator": 1}),
     (3, "cost_per_lead", 1)),
    (orjson.dumps({"kpi": "cost_per_lead", "dimensions": {"campaign": "probe-3"}, "denominator": 2}),
     (3, "cost_per_lead", 2)),
    (orjson.dumps({"kpi": "cost_per_mql", "dimensions": {"campaign": "probe-3"}, "denominator": 0}),
     (3, "cost_per_mql", 0)),
    (orjson.dumps({"kpi": "cost_per_lead", "dimensions": {"campaign": "probe-3"}}), (3, "cost_per_lead", None)),
    (orjson.dumps({"kpi": "cost_per_lead", "dimensions": {"campaign": "brand"}, "denominator": 1}), None),
])
def test_probe_record_holds_the_leads_counted(value: bytes, expected: tuple[int, str, object] | None) -> None:
    found = probe_record(value)
    assert (None if found is None else (found.number, found.kpi, found.leads)) == expected


def test_probe_log_lists_the_probes_counted_other_than_once() -> None:
    probes = ProbeLog()
    for number in range(4):
        probes.record_sent(number, 1.0)
    probes.record_leads(0, 1)
    probes.record_leads(1, 1)
    probes.record_leads(1, 2)  # a later revision counts it twice
    probes.record_leads(1, 1)  # and back: the probe stays miscounted
    probes.record_leads(2, 0)
    probes.record_leads(7, 2)  # never sent: not this run's probe
    assert probes.miscounted() == [1, 2]
    assert probes.wrong_leads == {1: 2, 2: 0}


def test_probes_differ_only_by_their_number() -> None:
    first, second = orjson.loads(probe_event(1, 5)), orjson.loads(probe_event(2, 5))
    assert first["event_id"] != second["event_id"] and first["lead_id"] != second["lead_id"]
    assert (first["campaign"], second["campaign"]) == ("probe-1", "probe-2")


# ---- peak RSS

STATUS = """Name:\tpython
State:\tS (sleeping)
VmPeak:\t 1234567 kB
VmSize:\t  987654 kB
VmHWM:\t  524288 kB
VmRSS:\t  262144 kB
Threads:\t4
"""


@pytest.mark.parametrize(("name", "expected"), [
    ("VmHWM", 524288),
    ("VmRSS", 262144),
    ("VmPeak", 1234567),
    ("VmSwap", None),
    ("Threads", None),  # not a kB field
    ("State", None),
])
def test_status_kb_reads_one_field(name: str, expected: int | None) -> None:
    assert status_kb(STATUS, name) == expected


def reader(texts: list[str | None]) -> Callable[[], str | None]:
    remaining = list(texts)
    return lambda: remaining.pop(0)


@pytest.mark.parametrize(("texts", "expected_mb"), [
    ([STATUS], 512.0),  # VmHWM, no samples taken
    ([STATUS.replace("VmRSS:\t  262144", "VmRSS:\t  786432"), STATUS], 768.0),  # a sample above a lower VmHWM
    (["VmRSS:\t  102400 kB\n", "VmRSS:\t  51200 kB\n", None], 100.0),  # gone at the end: the largest sample
    (["VmRSS:\t  51200 kB\n", "VmRSS:\t  102400 kB\n", "Name:\tpython\n"], 100.0),  # no VmHWM (not Linux-like)
    ([None, None], None),  # nothing ever read
])
def test_peak_rss_prefers_the_high_water_mark_and_falls_back_to_samples(texts: list[str | None],
                                                                         expected_mb: float | None) -> None:
    peak = PeakRss(reader(texts))
    for _ in texts[:-1]:
        peak.sample()
    assert peak.peak_mb() == expected_mb


# ---- accounting over several workers


def test_counts_are_summed_over_the_workers_pages(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1, 2], expected=1000)
    watched.record({1: metrics_page(events=300, rejected=5, duplicates=4), 2: metrics_page(events=200)}, now=1.0)
    assert watched.last.accounted == 509
    assert watched.last.duplicates == 4 and dict(watched.last.rejected) == {"invalid_json": 5}
    assert watched.accounted.first_at == 1.0


def test_a_worker_missing_a_poll_keeps_its_last_count(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1, 2], expected=1000)
    watched.record({1: metrics_page(events=300), 2: metrics_page(events=200)}, now=1.0)
    watched.record({1: metrics_page(events=400), 2: None}, now=1.2)
    assert watched.last.accounted == 600  # 400 + the 200 worker 2 last reported, not 400
    watched.record({1: None, 2: None}, now=1.4)
    assert watched.last.accounted == 600 and watched.accounted.changed_at == 1.2


def test_a_worker_not_up_yet_counts_nothing(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1, 2], expected=1000)
    watched.record({1: None, 2: None}, now=1.0)
    assert watched.accounted.first_at is None
    watched.record({1: metrics_page(events=0), 2: None}, now=1.2)
    assert watched.accounted.first_at is None
    watched.record({1: metrics_page(events=50), 2: None}, now=1.4)
    assert watched.accounted.first_at == 1.4 and watched.ready_at is None  # worker 2 never answered
    watched.record({1: metrics_page(events=60), 2: metrics_page(events=0)}, now=1.6)
    assert watched.ready_at == 1.6


def test_done_when_the_sum_reaches_or_passes_the_total_after_a_re_read(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1, 2], expected=1000)
    watched.record({1: metrics_page(events=100), 2: metrics_page(events=0)}, now=10.0)
    watched.record({1: metrics_page(events=500), 2: metrics_page(events=300)}, now=11.0)
    assert not watched.all_accounted(11.0)
    # A rebalance made worker 2 read 150 events worker 1 had counted: the sum passes the total.
    watched.record({1: metrics_page(events=600), 2: metrics_page(events=550)}, now=12.0)
    assert watched.all_accounted(12.0)
    assert watched.rate() == Rate(1000, 2.0)


def test_done_when_99_percent_accounted_and_settled(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1, 2], expected=1000)
    watched.record({1: metrics_page(events=500), 2: metrics_page(events=0)}, now=20.0)
    watched.record({1: metrics_page(events=600), 2: metrics_page(events=392)}, now=21.0)  # 992: stage changes wait
    assert not watched.all_accounted(21.0 + SETTLE_S - 0.1)
    watched.record({1: metrics_page(events=600), 2: metrics_page(events=392)}, now=21.0 + SETTLE_S)
    assert watched.all_accounted(21.0 + SETTLE_S)
    assert watched.rate() == Rate(1000, 1.0)  # to the poll where it last changed, not the settling time


def test_a_count_settled_above_99_percent_is_not_done_while_messages_are_left_to_read(tmp_path: Path) -> None:
    # A lead-heavy backlog finishes in batches seconds apart: 996 of 1,000 and quiet, but 4 still unread.
    watched = watch(tmp_path, [1], expected=1000)
    watched.record({1: metrics_page(events=996, lag={"entities": 3, "leads": 1})}, now=1.0)
    watched.record({1: metrics_page(events=996, lag={"entities": 3, "leads": 1})}, now=1.0 + 10 * SETTLE_S)
    assert not watched.all_accounted(1.0 + 10 * SETTLE_S)
    watched.record({1: metrics_page(events=996, lag={"entities": 0, "leads": 0})}, now=2.0 + 10 * SETTLE_S)
    assert watched.all_accounted(2.0 + 10 * SETTLE_S)


def test_below_99_percent_a_settled_count_is_not_done(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1, 2], expected=1000)
    watched.record({1: metrics_page(events=600), 2: metrics_page(events=380)}, now=1.0)
    assert not watched.all_accounted(1.0 + 10 * SETTLE_S)


def test_no_rate_before_anything_was_counted(tmp_path: Path) -> None:
    with pytest.raises(BenchError):
        watch(tmp_path, [1], expected=10).rate()


@pytest.mark.parametrize(("pages", "with_partitions", "expected"), [
    ({1: metrics_page(ready=1), 2: metrics_page(ready=1)}, False, True),
    ({1: metrics_page(ready=1), 2: metrics_page(ready=0)}, False, False),
    ({1: metrics_page(ready=1), 2: None}, False, False),
    ({1: metrics_page(ready=1)}, True, False),  # ready, but the group has not assigned it anything yet
    ({1: metrics_page(ready=1, partitions={"leads": 4, "spend": 4})}, True, True),
    ({1: metrics_page(ready=0, partitions={"leads": 4})}, True, False),
    ({1: metrics_page(ready=1, partitions={"leads": 4}), 2: metrics_page(ready=1)}, True, False),
])
def test_all_ready(pages: dict[int, str | None], with_partitions: bool, expected: bool) -> None:
    assert all_ready(pages, with_partitions) is expected


# ---- options and the JSON line


def test_options_default_to_every_phase() -> None:
    options = BenchOptions.parse([])
    assert (options.skip_latency, options.skip_two_workers, options.skip_rolling, options.latency_rate,
            options.latency_seconds) == (False, False, False, 2000, 20)
    options = BenchOptions.parse(["--skip-latency", "--skip-two-workers", "--skip-rolling", "--latency-rate", "500",
                                  "--latency-seconds", "5"])
    assert (options.skip_latency, options.skip_two_workers, options.skip_rolling, options.latency_rate,
            options.latency_seconds) == (True, True, True, 500, 5.0)


def test_lead_rate_defaults_to_the_channels_own_rates() -> None:
    assert BenchOptions.parse([]).lead_rate is None
    assert BenchOptions.parse(["--lead-rate", "1"]).lead_rate == 1.0


@pytest.mark.parametrize("args", [["--latency-rate", "0"], ["--latency-seconds", "0"], ["--lead-rate", "1.5"],
                                  ["--lead-rate", "-0.1"]])
def test_options_refuse_an_empty_latency_phase_or_a_lead_rate_outside_0_to_1(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        BenchOptions.parse(args)


def results(two_workers: TwoWorkerResult | None, latency: LatencyResult | None,
            rolling: RollingResult | None = None) -> Results:
    pipeline = PipelineResult(rate=Rate(1000, 0.5), accounted=1000, startup_s=5.0, kpi_quiet_s=1.0, kpi_records=10,
                              pending_leads=0, rejected={}, duplicates=0, scrape_ms=1.0, middle=None,
                              peak_rss_mb=123.456, ready_s=4.0, exit_code=0, state_bytes=3 * 2**20)
    restore = RestoreResult(after_sigterm=Restart(4.123, 3.0, 0, 0), after_sigkill=Restart(9.876, 9.0, 120, 120),
                            without_local_state=Restart(6.789, 5.0, 40_000, None), extra_events=1000,
                            accounted_at_kill=17)
    return Results(Produced({"leads": 1000}, {"lead": 1000}, 1.0), RawResult(Rate(1000, 0.1), Rate(1000, 3), 0),
                   Rate(1000, 0.25), pipeline, restore, two_workers, latency, [],
                   rolling=rolling)


def two_workers(failover: FailoverResult | None) -> TwoWorkerResult:
    return TwoWorkerResult(Rate(1000, 0.4), 1010, 5.0, (100.0, None), standby_replicas=1, changelog_records=52_000,
                           failover=failover)


def test_the_json_line_has_the_new_figures() -> None:
    failover = FailoverResult(failover_s=8.456, partitions_s=7.0, probes_s=8.456, partitions_before=25,
                              partitions_after=25, probes_sent=8, probes_seen=8, changelog_records=12)
    latency = LatencyResult(640.04, 1010.96, 100, 99, Rate(44000, 22.0))
    lines = report(results(two_workers(failover), latency), "take", None)
    figures = orjson.loads(lines[-1])
    assert figures["two_worker_speedup"] == 1.25  # 2500/s over 2000/s
    assert (figures["latency_p50_ms"], figures["latency_p99_ms"]) == (640.0, 1011.0)
    assert figures["peak_rss_mb"] == 123.5
    assert figures["state_mb_per_million_events"] == 3000.0  # 3 MiB for 1,000 events
    assert (figures["restore_after_sigterm_s"], figures["restore_after_sigkill_s"],
            figures["restore_without_local_state_s"]) == (4.12, 9.88, 6.79)
    assert figures["restore_seconds"] == figures["restore_without_local_state_s"]  # kept: the cold figure
    assert (figures["failover_s"], figures["two_worker_peak_rss_mb"], figures["standby_changelog_records"]) == (
        8.46, [100.0, None], 52_000)
    assert figures["pipeline_events_per_second"] == 2000.0
    assert not any("WARNING" in line for line in lines)  # 1 of 100 probes missing is not more than 1 %


def test_the_human_lines_show_the_three_restarts_and_the_failover() -> None:
    failover = FailoverResult(failover_s=None, partitions_s=7.0, probes_s=None, partitions_before=25,
                              partitions_after=25, probes_sent=8, probes_seen=6, changelog_records=None)
    lines = report(results(two_workers(failover), None), "take", None)
    (restore,) = [line for line in lines if line.startswith("restore after SIGTERM:")]
    assert "4.12 s, after SIGKILL 9.88 s, without local state 6.79 s" in restore
    assert "from its spawn 3.00 / 9.00 / 5.00 s" in restore
    (reads,) = [line for line in lines if line.startswith("restore reads:")]
    assert "to read 0 / 120 / 40,000" in reads and "offsets 0 / 120 / n/a" in reads
    assert "accounted 17 of 1000 extra events" in reads
    (line,) = [line for line in lines if line.startswith("failover:")]
    assert line.startswith("failover:               not seen") and "(6 seen), not seen" in line
    assert "all 25 partitions" in line and "n/a changelog records" in line
    assert any(line.startswith("standby cost:") and "records 52,000" in line for line in lines)
    assert orjson.loads(lines[-1])["failover_s"] is None


@pytest.mark.parametrize(("backlog", "extra"), [(3000, 1000), (100_000, 1000), (1_000_000, 10_000)])
def test_the_killed_worker_gets_a_hundredth_of_the_backlog_but_at_least_1000_events(backlog: int, extra: int) -> None:
    assert extra_events(backlog) == extra


def test_the_failover_counts_every_assigned_partition_but_the_changelogs() -> None:
    page = metrics_page(partitions={"run-leads": 4, "run-entities": 2, "run-cells-changelog": 4,
                                    "run-entity-state-changelog": 4, "run-__assignor-__leader": 1})
    assert stream_partitions(page) == 7


def test_skipped_phases_are_null_in_the_json_line_and_said_so() -> None:
    lines = report(results(None, None), "take", None)
    figures = orjson.loads(lines[-1])
    assert figures["two_worker_speedup"] is None
    assert figures["failover_s"] is None and figures["standby_changelog_records"] is None
    assert figures["latency_p50_ms"] is None and figures["latency_p99_ms"] is None
    assert figures["peak_rss_mb"] == 123.5
    assert any("skipped (--skip-two-workers)" in line for line in lines)
    assert any("skipped (--skip-latency)" in line for line in lines)
    assert any("skipped (--skip-rolling)" in line for line in lines)
    assert all(figures[key] is None for key in figures if key.startswith("rolling_"))


def rolling(max_delay_ms: float, probes_seen: int = 300, miscounted: int = 0) -> RollingResult:
    steps = (RestartStep(1, 2.54, 8.0, 0), RestartStep(2, 3.0, 9.456, 0))
    return RollingResult(max_delay_ms=max_delay_ms, before_max_ms=300.0, p50_ms=120.04, p99_ms=2500.06, probes_sent=300,
                         probes_seen=probes_seen, miscounted=miscounted, steps=steps, traffic=Rate(60000, 30.0))


def test_the_json_line_has_the_rolling_restart_figures() -> None:
    lines = report(results(None, None, rolling(4321.06)), "take", None)
    figures = orjson.loads(lines[-1])
    assert (figures["rolling_max_delay_ms"], figures["rolling_p50_ms"], figures["rolling_p99_ms"]) == (
        4321.1, 120.0, 2500.1)
    assert (figures["rolling_missing"], figures["rolling_miscounted"]) == (0, 0)
    assert figures["rolling_before_max_delay_ms"] == 300.0
    assert figures["rolling_stop_to_ready_seconds"] == [10.54, 12.46]
    steps = [line for line in lines if "restart:" in line and line.lstrip().startswith("worker")]
    assert len(steps) == 2 and "stop to ready 10.5 s" in steps[0]
    assert not any("WARNING" in line for line in lines)


@pytest.mark.parametrize(("result", "warning"), [
    (rolling(30_000.0), None),  # the target: at most 30 s
    (rolling(30_000.5), "a probe delayed more than 30 s"),
    (rolling(900.0, probes_seen=297), "3 probes missing"),
    (rolling(900.0, miscounted=2), "2 probes counted other than once"),
])
def test_a_rolling_restart_past_its_target_is_called_out(result: RollingResult, warning: str | None) -> None:
    (line,) = [line for line in report(results(None, None, result), "take", None)
               if line.startswith("rolling restart:")]
    assert ("WARNING" in line) is (warning is not None)
    assert warning is None or warning in line


def test_a_failed_two_worker_phase_is_said_so_and_its_figures_are_null() -> None:
    failed = dataclasses.replace(results(None, None), two_workers_failure="the worker 1 of two exited with code 70; "
                                                                           "last log lines:\nTraceback")
    lines = report(failed, "take", None)
    (line,) = [line for line in lines if line.startswith("two workers:")]
    assert "FAILED" in line and "exited with code 70; last log lines:" in line and "Traceback" not in line
    figures = orjson.loads(lines[-1])
    assert figures["failover_s"] is None and figures["restore_after_sigterm_s"] == 4.12


def test_many_missing_probes_are_called_out() -> None:
    latency = LatencyResult(640.0, 900.0, 100, 97, Rate(44000, 22.0))
    (line,) = [line for line in report(results(None, latency), "take", None) if line.startswith("latency:")]
    assert "missing 3" in line and "WARNING: 3.0 %" in line


def test_a_backlog_counted_between_two_polls_is_timed_from_the_poll_that_found_nothing(tmp_path: Path) -> None:
    # 3,000 events read between two polls 0.2 s apart: timed from the first non-zero poll, that was no time at all
    # (0 events/s in one CI run, with a faster pipeline).
    watched = watch(tmp_path, [1], expected=3000)
    watched.record({1: metrics_page(events=0)}, now=5.0)
    watched.record({1: metrics_page(events=0)}, now=5.2)
    watched.record({1: metrics_page(events=3000)}, now=5.4)
    assert watched.all_accounted(5.4)
    assert watched.rate() == Rate(3000, pytest.approx(0.2))


def test_a_backlog_counted_by_the_first_poll_answered_has_no_rate(tmp_path: Path) -> None:
    watched = watch(tmp_path, [1], expected=3000)
    watched.record({1: None}, now=5.0)
    watched.record({1: metrics_page(events=3000)}, now=5.2)
    with pytest.raises(BenchError, match="more --events"):
        watched.rate()


# ---- CPU per event


@pytest.mark.parametrize(("events", "cpu", "expected_us"), [
    # Start-up before the first count and the quiescing after the last change are left out: (2.25 - 1.5) s.
    ([0, 400, 1000, 1000], [1.0, 1.5, 2.25, 9.0], 750.0),
    # Everything counted between two polls: from the poll that found nothing, as the rate is.
    ([0, 1000, 1000], [1.0, 1.2, 5.0], 200.0),
])
def test_cpu_per_event_is_the_workers_cpu_over_the_span_the_rate_divides_by(
        tmp_path: Path, events: list[int], cpu: list[float], expected_us: float) -> None:
    pages, readings = iter(events), iter(cpu)
    watched = PipelineWatch([1], 1000, Progress(interval_s=3600), Timeline(tmp_path / "timeline.csv", "a,k,p"),
                            fetch=lambda port: metrics_page(events=next(pages)), cpu=lambda: next(readings))
    for _ in events:
        watched.poll()
    assert watched.cpu_per_event_us() == pytest.approx(expected_us)


def test_cpu_per_event_is_not_made_up_where_the_cpu_was_not_read(tmp_path: Path) -> None:
    pages = iter([0, 400, 1000])
    watched = PipelineWatch([1], 1000, Progress(interval_s=3600), Timeline(tmp_path / "timeline.csv", "a,k,p"),
                            fetch=lambda port: metrics_page(events=next(pages)), cpu=lambda: None)
    for _ in range(3):
        watched.poll()
    assert watched.cpu_per_event_us() is None


def test_a_process_cpu_is_read_from_proc_as_the_kernel_counts_it() -> None:
    busy_until = time.process_time() + 0.3
    while time.process_time() < busy_until:
        pass
    read = cpu_seconds(os.getpid())
    times = os.times()
    assert read is not None and abs(read - (times.user + times.system)) < 0.05
    assert cpu_seconds(2 ** 22 + 1) is None  # no such process


def test_the_state_on_disk_is_every_rocksdb_store_under_the_data_dir(tmp_path: Path) -> None:
    for name, size in (("app-entities", 1000), ("app-cells", 234)):
        store = tmp_path / "tables" / name
        store.mkdir(parents=True)
        (store / "CURRENT").write_bytes(b"MANIFEST-000001\n")
        (store / "000012.sst").write_bytes(b"x" * size)
    (tmp_path / "worker.log").write_bytes(b"y" * 5000)  # not a store
    assert store_bytes(tmp_path) == 1000 + 234 + 2 * len(b"MANIFEST-000001\n")
    assert store_bytes(tmp_path / "tables" / "nothing-here") is None
