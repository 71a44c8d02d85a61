"""End to end on the real broker: a mixed event set gives KPI topics equal to an independent batch computation."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import RunningBroker
from tests.eventset import DAY_START, doc, heartbeats, mixed, shifted
from tests.integration.harness import INPUTS, Names, Worker, produce, read_topic, start_worker
from tests.integration.outcome import (
    as_input,
    assert_final_kpis_exact,
    beats,
    dead_letter_sources,
    wait_for_finals,
    wait_for_watermark,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_replayed_backlog_matches_batch_computation(each_broker: RunningBroker, names: Names, tmp_path: Path) -> None:
    """Also on the embedded broker, the demo's default."""
    bootstrap = each_broker.bootstrap_servers
    messages, expected = mixed()
    # The whole set is waiting before the worker starts: partitions are read unevenly, as on any backlog.
    sent = produce(bootstrap, as_input(names, messages, seed=1))
    sent_beats = beats(names)
    sent += produce(bootstrap, sent_beats)
    worker = start_worker(names, bootstrap, tmp_path, **each_broker.worker_env)
    try:
        wait_for_finals(worker, sent)
        counts = {name: worker.total(name) for name in (
            "leadgen_events_total", "leadgen_events_duplicate_total", "leadgen_events_rejected_total")}
        metrics_text = worker.metrics_text()
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    # Every input message is in exactly one of the three counters.
    assert counts == {"leadgen_events_total": expected["valid"] + len(sent_beats),
                      "leadgen_events_duplicate_total": expected["duplicate"],
                      "leadgen_events_rejected_total": expected["rejected"]}
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats)
    assert len(dead_letter_sources(bootstrap, names)) == expected["rejected"]
    dead = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("dead-letters"))]
    assert any("payload_base64" in record for record in dead)
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics_text.encode(), capture_output=True,
                               check=False)
        assert check.returncode == 0 and not check.stdout and not check.stderr, check.stdout + check.stderr
    else:
        pytest.fail("promtool is missing: install Debian's prometheus package (the test command does)")


def test_restart_mid_stream_gives_same_final_kpis(bootstrap: str, names: Names, tmp_path: Path) -> None:
    """Stop the worker between two halves of the stream (its batches done), start it again: same final KPIs.

    The restarted worker reuses the first one's local files (``KPI_STORE=disk://``, the same ``KPI_DATA_DIR``):
    after a clean stop they hold every changelog record, so it reads none. A worker with empty files restores
    its tables from their changelogs, the test of recovery reading each changelog to its real end (see
    ``stream.runtime.faust_internals``). Crashes in flight are in ``test_reliability``.
    """
    messages, expected = mixed(seed=11)
    payload = as_input(names, messages, seed=2)
    half = len(payload) // 2
    data = {"KPI_DATA_DIR": str(tmp_path / "data")}
    first = start_worker(names, bootstrap, tmp_path, label="first", KPI_BATCH_MAX="20", **data)
    try:
        sent = produce(bootstrap, payload[:half])
        # Stage changes whose lead is in the second half wait uncounted, so wait for the counts to settle.
        first.wait_until(lambda: first.accounted() >= half * 0.9, what="most of the first half of the events")
        first.wait_quiet("leadgen_events_total")
        first.wait_quiet("leadgen_kpi_records_total")
        first_accounted = first.accounted()
    finally:
        assert first.stop(signal.SIGTERM) == 0, first.log_tail()
    sent_beats = beats(names)
    second = start_worker(names, bootstrap, tmp_path, label="second", **data)
    log = second.log_path.read_text()
    assert log.count("reusing local state") == 2, second.log_tail()
    tails = re.findall(r"partition \d+: local state at changelog offset \d+; (\d+) records past it", log)
    assert tails == ["0"] * 8, tails  # 4 partitions of 2 tables, each with every record of its changelog
    try:
        sent += produce(bootstrap, payload[half:])
        sent += produce(bootstrap, sent_beats)
        wait_for_watermark(second)
        # The stop committed every offset the first worker had processed: nothing is read (and counted) twice.
        assert first_accounted + second.accounted() == sent
        assert not second.errors(), second.errors()
    finally:
        assert second.stop() == 0, second.log_tail()
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert sent == len(payload) + len(sent_beats)


def test_two_workers_in_one_group_match_batch_computation(bootstrap: str, names: Names, tmp_path: Path) -> None:
    messages, expected = mixed(seed=5)
    one = start_worker(names, bootstrap, tmp_path, label="one")
    two = start_worker(names, bootstrap, tmp_path, label="two")
    workers = (one, two)
    try:
        entity_topic = f"{names.app_id}-entities"

        def shared() -> bool:
            owned = [w.metrics().get(("leadgen_assigned_partitions", (("topic", entity_topic),)), 0) for w in workers]
            return all(owned) and sum(owned) == 4

        one.wait_until(shared, what="both workers to own entity partitions")
        sent = produce(bootstrap, as_input(names, messages, seed=3))
        sent_beats = beats(names)
        sent += produce(bootstrap, sent_beats)
        one.wait_until(lambda: one.accounted() + two.accounted() >= sent, what="all events accounted")
        for worker in workers:
            worker.wait_quiet("leadgen_kpi_records_total")
        valid = one.total("leadgen_events_total") + two.total("leadgen_events_total")
        breakdown = [(name, labels, value) for w in workers for (name, labels), value in w.metrics().items()
                     if name.startswith("leadgen_events")]
        assert valid == expected["valid"] + len(sent_beats), breakdown
        assert not one.errors() and not two.errors(), one.errors() + two.errors()
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.log_tail()
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats)


def live_ms(window_ms: int, count: int) -> int:
    """An event time close to now from which ``count`` events 1 ms apart fall in one window of ``window_ms``.

    Stamped from the clock as it is, events a few ms before a window's end straddle two windows, and the test
    waits only for the first to be final (about one run in 2,500).
    """
    now_ms = int(time.time() * 1000)
    return now_ms - max(now_ms % window_ms - (window_ms - count), 0)


def test_caught_up_partitions_go_idle_so_live_windows_close(bootstrap: str, names: Names, tmp_path: Path) -> None:
    """Live page views on one input partition, every other partition empty: once all are caught up the
    watermark moves on with the clock, and the window becomes final with no heartbeat to push it.

    The other side of "a partition with unread messages is never idle": the worker's marking must let go of
    partitions that have nothing left to read, or live windows would never close on a quiet topic.
    """
    worker = start_worker(names, bootstrap, tmp_path, KPI_WINDOW_SIZES="10s", KPI_ALLOWED_LATENESS="1s",
                          KPI_IDLE_PARTITION_TIMEOUT="2s")
    try:
        first_ms = live_ms(10_000, 5)
        window_start = first_ms - first_ms % 10_000
        views = [(names.topic("page-views"), 0, doc(f"live-{i}", first_ms + i, visitor_id=f"v{i}", url="/pricing",
                                                     channel="email")) for i in range(5)]
        produce(bootstrap, views)
        final_after_s = (window_start + 10_000 + 1_000) / 1000
        worker.wait_until(lambda: min(
            (value for (name, _), value in worker.metrics().items() if name == "leadgen_watermark_timestamp_seconds"),
            default=0) >= final_after_s, 60, what="the watermark of both stages to pass the live window")
        worker.wait_quiet("leadgen_kpi_records_total")
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    finals = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("kpi-traffic"))]
    counted = [r for r in finals if r["kpi"] == "page_views" and r["window"]["size"] == "10s" and r["final"]
               and r["dimensions"] == {"channel": "email"}]
    assert [r["value"] for r in counted] == [5.0], finals


def test_a_partition_idle_when_it_changes_owner_does_not_hold_the_watermark(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """A page-view partition has one event, then none: when a new worker takes it over (here, after a stop),
    it has no event time of its own for it. Once it is caught up there, the partition must stop holding the
    watermark at the last progress its old owner reported, or no later live window would ever close."""
    sizes = {"KPI_WINDOW_SIZES": "5s", "KPI_ALLOWED_LATENESS": "1s", "KPI_IDLE_PARTITION_TIMEOUT": "2s"}

    def views(prefix: str, at_ms: int, partitions: tuple[int, ...]) -> list[tuple[str, int, bytes]]:
        return [(names.topic("page-views"), p, doc(f"{prefix}-{p}", at_ms + p, visitor_id=f"{prefix}{p}",
                                                   url="/pricing", channel="email")) for p in partitions]

    def passes(worker: Worker, at_ms: int) -> None:
        final_after_s = (at_ms - at_ms % 5_000 + 5_000 + 1_000) / 1000
        worker.wait_until(lambda: min(
            (value for (name, _), value in worker.metrics().items() if name == "leadgen_watermark_timestamp_seconds"),
            default=0) >= final_after_s, 60, what="the watermark of both stages to pass the live window")

    first = start_worker(names, bootstrap, tmp_path, label="first", **sizes)
    try:
        before_ms = live_ms(5_000, 3)
        produce(bootstrap, views("before", before_ms, (0, 1, 2)))
        passes(first, before_ms)
        assert not first.errors(), first.errors()
    finally:
        assert first.stop() == 0, first.log_tail()
    second = start_worker(names, bootstrap, tmp_path, label="second", **sizes)
    try:
        after_ms = live_ms(5_000, 2)
        produce(bootstrap, views("after", after_ms, (0, 1)))  # partition 2 stays idle
        passes(second, after_ms)
        second.wait_quiet("leadgen_kpi_records_total")
        assert not second.errors(), second.errors()
    finally:
        assert second.stop() == 0, second.log_tail()
    records = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("kpi-traffic"))]
    start = datetime.fromtimestamp((after_ms - after_ms % 5_000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    final = [r for r in records if r["kpi"] == "page_views" and r["window"]["size"] == "5s"
             and r["window"]["start"] == start and r["dimensions"] == {"channel": "email"} and r["final"]]
    assert [r["value"] for r in final] == [2.0], records


def _fall_back_hours(records: list[dict]) -> None:
    """New York's 2026-11-01: both 01:00 hours, and a 25-hour day."""
    hours = sorted({r["window"]["start"] for r in records if r["window"]["size"] == "1h"})
    assert "2026-11-01T01:00:00-04:00" in hours and "2026-11-01T01:00:00-05:00" in hours, hours[:8]
    day = next(r["window"] for r in records if r["window"]["size"] == "1d"
               and r["window"]["start"] == "2026-11-01T00:00:00-04:00")
    assert day["end"] == "2026-11-02T00:00:00-05:00"  # 25 hours


def _spring_forward_hours(records: list[dict]) -> None:
    """New York's 2026-03-08: no 02:00 hour, 01:00 EST followed by 03:00 EDT, and a 23-hour day."""
    hours = sorted({r["window"]["start"] for r in records if r["window"]["size"] == "1h"})
    assert not any(start.startswith("2026-03-08T02:") for start in hours), hours
    assert "2026-03-08T01:00:00-05:00" in hours and "2026-03-08T03:00:00-04:00" in hours, hours[:8]
    day = next(r["window"] for r in records if r["window"]["size"] == "1d"
               and r["window"]["start"] == "2026-03-08T00:00:00-05:00")
    assert day["end"] == "2026-03-09T00:00:00-04:00"  # 23 hours


def _half_hour_zone(records: list[dict]) -> None:
    """Asia/Kolkata, +05:30: hours and days start on the local clock, at :30 UTC."""
    starts = {r["window"]["start"] for r in records if r["window"]["size"] in ("1h", "1d")}
    assert starts and all(start.endswith(":00:00+05:30") for start in starts), sorted(starts)[:5]
    assert "2026-11-22T00:00:00+05:30" in starts


def test_new_york_calendar_windows_across_the_fall_back_night_are_exact_after_a_sigkill(
        each_broker: RunningBroker, names: Names, tmp_path: Path) -> None:
    """New York's 2026 fall-back night, its repeated hour inside the data: on the session's broker and, in a Kafka
    session, on the embedded one too (see ``_replay_in_zone``)."""
    _replay_in_zone(each_broker, names, tmp_path, "America/New_York", 1_793_505_600_000, _fall_back_hours)  # 04:00Z


@pytest.mark.parametrize(("zone", "midnight", "local_rule"), [
    pytest.param("America/New_York", 1_772_946_000_000, _spring_forward_hours, id="new-york-spring-forward"),  # 05:00Z
    pytest.param("Asia/Kolkata", 1_795_285_800_000, _half_hour_zone, id="kolkata"),  # 18:30Z the day before
])
def test_calendar_windows_in_a_reporting_zone_are_exact_after_a_sigkill(
        session_broker: RunningBroker, names: Names, tmp_path: Path, zone: str, midnight: int,
        local_rule: Callable[[list[dict]], None]) -> None:
    """New York's spring-forward night (its missing hour) and a Kolkata day (hours on the half hour), on the
    session's broker only: the suite runs once per broker, and each replay costs about 26 s."""
    _replay_in_zone(session_broker, names, tmp_path, zone, midnight, local_rule)


def _replay_in_zone(broker: RunningBroker, names: Names, tmp_path: Path, zone: str, midnight: int,
                    local_rule: Callable[[list[dict]], None]) -> None:
    """The fixed event set moved to a local midnight of ``zone``, replayed as a backlog in hours, days, weeks,
    months, quarters and years of the zone, and the trailing 7 days; the first worker is SIGKILLed while reading it,
    a second finishes on the same data dir. Every key equals the batch computation; ``local_rule`` checks what is
    particular to the zone's day."""
    bootstrap = broker.bootstrap_servers
    sizes = ("1h", "1d", "1w", "1mo", "1q", "1y")
    messages, expected = mixed(seed=17)
    moved = shifted(messages, midnight - DAY_START)
    # Past the end of 2026 (its year and last quarter) and the lateness: every window of the data closes.
    beats_at = 1_798_761_600_000 + 2 * 86_400_000 + 43_200_000  # 2027-01-03T12:00:00Z: past every zone's new year
    sent_beats = heartbeats([names.topic(t) for t in INPUTS], 4, beats_at)
    ahead_days = (beats_at - midnight) // 86_400_000 + 1
    env = {"KPI_TIMEZONE": zone, "KPI_WINDOW_SIZES": ",".join(sizes), "KPI_TRAILING_DAYS": "7d",
           "KPI_BATCH_MAX": "20",
           # The heartbeats may be ahead of the processing clock: let them in. Input the second worker reads again
           # after the kill trails the watermark by up to the heartbeats' lead: kept as a duplicate, not
           # dead-lettered as late, as a production replay of a few seconds is (see "Counters across a crash").
           "KPI_MAX_FUTURE_SKEW": "3650d", "KPI_DEDUP_RETENTION": f"{ahead_days + 20}d",
           "KPI_DATA_DIR": str(tmp_path / "data"), **broker.worker_env}
    sent = produce(bootstrap, as_input(names, moved, seed=5)) + produce(bootstrap, sent_beats)
    first = start_worker(names, bootstrap, tmp_path, label="first", **env)
    try:
        first.wait_until(lambda: first.accounted() >= sent * 0.3, what="a third of the backlog")
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        first.stop()
    second = start_worker(names, bootstrap, tmp_path, label="second", **env)
    try:
        wait_for_watermark(second, timeout_s=150)
        assert not second.errors(), second.errors()
    finally:
        assert second.stop() == 0, second.log_tail()
    data_until = datetime.fromtimestamp((midnight + 32 * 3_600_000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    records = assert_final_kpis_exact(bootstrap, names, moved, sent_beats, restarted=True, sizes=(*sizes, "last7d"),
                                      zone=zone, data_until=data_until)
    assert {r["window"]["size"] for r in records if r["window"]["kind"] == "trailing"} == {"7d"}
    local_rule(records)
    assert {r["window"]["zone"] for r in records} == {zone}
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
