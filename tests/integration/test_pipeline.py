"""End to end on the real broker: a mixed event set gives KPI topics equal to an independent batch computation."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.eventset import mixed
from tests.integration.harness import Names, produce, read_topic, start_worker
from tests.integration.outcome import (
    as_input,
    assert_final_kpis_exact,
    beats,
    dead_letter_sources,
    wait_for_finals,
    wait_for_watermark,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_replayed_backlog_matches_batch_computation(bootstrap: str, names: Names, tmp_path: Path) -> None:
    messages, expected = mixed()
    # The whole set is waiting before the worker starts: partitions are read unevenly, as on any backlog.
    sent = produce(bootstrap, as_input(names, messages, seed=1))
    sent_beats = beats(names)
    sent += produce(bootstrap, sent_beats)
    worker = start_worker(names, bootstrap, tmp_path)
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

    The restarted worker restores its tables from their changelogs first, so this is the test of recovery
    reading each changelog to its real end (see ``stream.transport``); crashes in flight are in
    ``test_reliability``.
    """
    messages, expected = mixed(seed=11)
    payload = as_input(names, messages, seed=2)
    half = len(payload) // 2
    first = start_worker(names, bootstrap, tmp_path, label="first", KPI_BATCH_MAX="20")
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
    second = start_worker(names, bootstrap, tmp_path, label="second")
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
