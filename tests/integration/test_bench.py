"""The benchmark command runs on the embedded broker and ends with its JSON figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_prints_its_figures_as_the_last_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KPI_"))}
    # Every phase but the rolling restart (its own test below) on, kept short for CI: 3 s of probes, at a live rate
    # the worker keeps up with on a small runner (at the default 2000/s a loaded 2-CPU runner falls behind and
    # probes arrive after the grace period).
    result = subprocess.run([sys.executable, "-m", "stream", "bench", "--events", "3000", "--latency-seconds", "3",
                             "--latency-rate", "300", "--skip-rolling"], env=env, capture_output=True, timeout=240,
                            check=False)
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()[-3000:]
    figures = json.loads(output.strip().splitlines()[-1])
    assert figures["events"] == 3000
    for key in ("pipeline_events_per_second", "raw_events_per_second", "faust_floor_events_per_second",
                "latency_p50_ms", "two_worker_speedup", "peak_rss_mb", "restore_seconds", "restore_after_sigterm_s",
                "restore_after_sigkill_s", "restore_without_local_state_s", "failover_s",
                "standby_changelog_records"):
        assert figures[key] > 0, (key, figures)
    assert figures["latency_p99_ms"] >= figures["latency_p50_ms"], figures
    expected_vs_raw = figures["pipeline_events_per_second"] / figures["raw_events_per_second"]
    assert abs(figures["pipeline_vs_raw"] - expected_vs_raw) < 1e-4, figures


def test_a_rolling_restart_counts_every_probe_once() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KPI_"))}
    # The phase has no length of its own to shorten (two restarts), so the others are left out or kept small.
    result = subprocess.run([sys.executable, "-m", "stream", "bench", "--events", "3000", "--skip-two-workers",
                             "--skip-latency", "--latency-rate", "300"], env=env, capture_output=True, timeout=300,
                            check=False)
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()[-3000:]
    figures = json.loads(output.strip().splitlines()[-1])
    assert figures["rolling_miscounted"] == 0, output
    assert figures["rolling_max_delay_ms"] >= figures["rolling_p99_ms"] >= figures["rolling_p50_ms"] > 0, figures
    assert len(figures["rolling_stop_to_ready_seconds"]) == 2, figures
