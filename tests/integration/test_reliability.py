"""Crashes on the real broker: after SIGKILL the final KPI records still equal the batch computation.

Run with ``-s`` to see the figures that ``docs/reliability.md`` quotes (recovery times, counters).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunningBroker
from tests.eventset import mixed
from tests.integration.harness import ACCOUNTING_COUNTERS, Names, Worker, produce, start_worker
from tests.integration.outcome import (
    as_input,
    assert_final_kpis_exact,
    beats,
    dead_letter_sources,
    unhandled_inputs,
    wait_for_watermark,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The backlog spans three days of event time (the heartbeats that close every window come last), and a stopped
# worker's input offsets trail the watermark its state reached: the backlog is read within seconds. Input
# replayed from further behind the watermark than the dedup retention is no longer recognised as a duplicate
# and is dead-lettered as late. The retention covers the whole backlog here, as it would cover a production
# replay (a few seconds of input) by a wide margin.
RETENTION = {"KPI_DEDUP_RETENTION": "7d"}

def _counts(worker: Worker) -> dict[str, float]:
    counts = {name: worker.total(name) for name in ACCOUNTING_COUNTERS}
    counts["late_contributions"] = worker.total("leadgen_late_contributions_total")
    counts["rebalances"] = worker.total("leadgen_rebalances_total")
    return counts


def _kill_when(worker: Worker, accounted: float, sig: int = signal.SIGKILL) -> dict[str, float]:
    """Signal the worker (SIGKILL) once it has handled ``accounted`` input messages; its counters just before."""
    # Input read again after an earlier kill counts towards the progress here too; a worker left with little
    # to do is killed after a few seconds anyway.
    deadline = time.monotonic() + 5
    worker.wait_until(lambda: time.monotonic() > deadline or worker.accounted() >= accounted,
                      what=f"{accounted:.0f} events accounted")
    counts = _counts(worker)
    if sig == signal.SIGKILL:
        worker.process.send_signal(sig)
        worker.process.wait(timeout=10)
    else:
        assert worker.stop(sig) == 0, worker.log_tail()
    return counts


def test_sigkill_and_sigterm_at_several_points_give_exact_final_kpis(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """Three workers in turn are stopped in the middle of a backlog, with batches in flight: the first and the
    third by SIGKILL, the second by SIGTERM (a graceful stop). The fourth finishes; the final KPIs are exact."""
    messages, expected = mixed(seed=13)
    sent_beats = beats(names)
    # A backlog read in small batches, so that each kill lands while batches are in flight.
    sent = produce(bootstrap, as_input(names, messages, seed=4)) + produce(bootstrap, sent_beats)
    counted: list[dict[str, float]] = []
    recoveries: list[float] = []
    killed_at = None
    stops = (("first", 0.15, signal.SIGKILL), ("second", 0.3, signal.SIGTERM), ("third", 0.3, signal.SIGKILL))
    for label, share, sig in stops:
        worker = start_worker(names, bootstrap, tmp_path, label=label, KPI_BATCH_MAX="20", **RETENTION)
        if killed_at is not None:
            recoveries.append(time.monotonic() - killed_at)
        counted.append(_kill_when(worker, share * sent, sig))
        killed_at = time.monotonic()
    last = start_worker(names, bootstrap, tmp_path, label="last", **RETENTION)
    recoveries.append(time.monotonic() - killed_at)
    try:
        wait_for_watermark(last)
        counted.append(_counts(last))
        assert not last.errors(), last.errors()
    finally:
        assert last.stop() == 0, last.log_tail()
    # Nothing lost, nothing counted twice: every KPI key's last record equals the batch computation. (Late cell
    # contributions are not asserted here: input read again after a stop can reach cells that closed, and were
    # dropped, since it was first applied. The exact final records are the check that none was lost.)
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    # Every rejected message is dead-lettered; a batch replayed after a kill may send its dead letters again.
    dead = Counter(dead_letter_sources(bootstrap, names))
    assert len(dead) == expected["rejected"]
    totals = {name: sum(c[name] for c in counted) for name in ACCOUNTING_COUNTERS}
    # The counters are per process: input a killed worker had not committed is read again by the next one and
    # counted again, mostly as duplicates (its event ids were kept); the KPI topics above are the exact account.
    print(f"\nSIGKILL, SIGTERM, SIGKILL: recovery (stop to ready) {', '.join(f'{r:.1f}' for r in recoveries)} s; "
          f"counters summed over the 4 processes {totals} for {sent} messages (expected valid "
          f"{expected['valid'] + len(sent_beats)}, duplicate {expected['duplicate']}, rejected "
          f"{expected['rejected']}); "
          f"dead letters re-sent: {sum(dead.values()) - len(dead)}; late cell contributions (replays reaching "
          f"dropped cells) {sum(c['late_contributions'] for c in counted):.0f}")


def test_sigkill_one_of_two_workers_and_a_third_joining_gives_exact_final_kpis(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """Two workers split the partitions; one is killed, the other takes over its partitions and state; a third
    joins mid-stream. The final KPI records equal the batch computation."""
    messages, expected = mixed(seed=17)
    payload = as_input(names, messages, seed=5)
    sent_beats = beats(names)
    one = start_worker(names, bootstrap, tmp_path, label="one", KPI_BATCH_MAX="20")
    two = start_worker(names, bootstrap, tmp_path, label="two", KPI_BATCH_MAX="20")
    entity_topic = f"{names.app_id}-entities"

    def owned(worker: Worker) -> float:
        try:
            return worker.metrics().get(("leadgen_assigned_partitions", (("topic", entity_topic),)), 0)
        except OSError:
            return 0

    one.wait_until(lambda: owned(one) and owned(two) and owned(one) + owned(two) == 4,
                   what="both workers to own entity partitions")
    third = None
    try:
        third_at = len(payload) * 2 // 3
        sent = produce(bootstrap, payload[:len(payload) // 3])
        two.wait_until(lambda: two.accounted() > 0, what="the second worker to process events")
        two.process.send_signal(signal.SIGKILL)
        two.process.wait(timeout=10)
        killed_at = time.monotonic()
        one.wait_until(lambda: owned(one) == 4, what="the survivor to take over every entity partition")
        takeover = time.monotonic() - killed_at
        sent += produce(bootstrap, payload[len(payload) // 3:third_at])
        third = start_worker(names, bootstrap, tmp_path, label="third")
        sent += produce(bootstrap, payload[third_at:]) + produce(bootstrap, sent_beats)
        for worker in (one, third):
            wait_for_watermark(worker)
        assert owned(one) + owned(third) == 4
        assert not one.errors() and not third.errors(), one.errors() + third.errors()
    finally:
        for worker in (one, two, third):
            if worker is not None:
                assert worker.stop() in (0, -signal.SIGKILL), worker.log_tail()
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    assert sent == len(payload) + len(sent_beats)
    assert unhandled_inputs(bootstrap, names) == []  # read by a worker, and its offset committed, but never handled
    print(f"\nscale-out: survivor owned all 4 entity partitions {takeover:.1f} s after the kill")


def test_broker_paused_for_20_seconds_mid_stream_gives_exact_final_kpis(
        names: Names, tmp_path: Path, new_broker: Callable[[Path], RunningBroker]) -> None:
    """SIGSTOP the broker for 20 s while events flow; after SIGCONT the worker carries on by itself."""
    messages, expected = mixed(seed=19)
    payload = as_input(names, messages, seed=6)
    sent_beats = beats(names)
    broker = new_broker(tmp_path)
    bootstrap = broker.bootstrap_servers
    worker = start_worker(names, bootstrap, tmp_path, KPI_BATCH_MAX="20")
    try:
        half = len(payload) // 2
        sent = produce(bootstrap, payload[:half])
        worker.wait_until(lambda: worker.accounted() > 0, what="the worker to process events")
        broker.send_signal(signal.SIGSTOP)
        time.sleep(20)
        broker.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        sent += produce(bootstrap, payload[half:]) + produce(bootstrap, sent_beats)
        wait_for_watermark(worker)
        caught_up = time.monotonic() - resumed_at
        counts = _counts(worker)
        assert worker.process.poll() is None
    finally:
        worker.stop()
    # Nothing was read twice, so no contribution may have reached a closed window (a watermark ahead of
    # events still to come); checked first, as it names the cause of the KPI mismatch it would lead to.
    assert counts["late_contributions"] == 0, counts
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    # The worker never stopped. Without a rebalance its counters saw everything once. Apache Kafka, resumed,
    # expires the group session the stall outlasted (KPI_SESSION_TIMEOUT, 6 s): the worker joins again and reads
    # again what it had not committed, counting a repeated event id as a duplicate and a bad message again
    # (see "Counters across a crash" in docs/reliability.md). Valid events are counted once either way.
    assert counts["leadgen_events_total"] == expected["valid"] + len(sent_beats), counts
    if counts["rebalances"] <= 1:  # the first assignment only
        assert counts["leadgen_events_duplicate_total"] == expected["duplicate"], counts
        assert counts["leadgen_events_rejected_total"] == expected["rejected"], counts
    else:
        assert counts["leadgen_events_duplicate_total"] >= expected["duplicate"], counts
        assert counts["leadgen_events_rejected_total"] >= expected["rejected"], counts
    assert sent == len(payload) + len(sent_beats)
    print(f"\nbroker stall 20 s: all windows final {caught_up:.1f} s after the broker resumed; counters {counts}")


def test_sigterm_with_the_broker_gone_stops_the_worker_within_its_stop_timeout(
        names: Names, tmp_path: Path, new_broker: Callable[[Path], RunningBroker]) -> None:
    """A worker whose broker has gone cannot deliver its last sends, and Faust's stop waits for them; it exits
    at KPI_STOP_TIMEOUT with status 75 instead of running on (it did, over 90 s after SIGTERM)."""
    messages, _ = mixed(seed=23)
    broker = new_broker(tmp_path)
    worker = start_worker(names, broker.bootstrap_servers, tmp_path, KPI_STOP_TIMEOUT="3s")
    produce(broker.bootstrap_servers, as_input(names, messages, seed=7))
    worker.wait_until(lambda: worker.accounted() > 0, what="the worker to process events")
    broker.stop()
    time.sleep(2)  # the broker is gone: progress reports pile up unsent
    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        status = worker.process.wait(timeout=30)
    finally:
        worker.stop(signal.SIGKILL)
    took = time.monotonic() - signalled
    assert status == 75, worker.log_tail()
    assert "did not stop within 3 s (KPI_STOP_TIMEOUT)" in worker.log_path.read_text(errors="replace")
    assert took < 10, took
    print(f"\nstop with the broker gone: exit {status} {took:.1f} s after SIGTERM (KPI_STOP_TIMEOUT=3s)")


# Loaded by the worker's interpreter at start-up (``sitecustomize`` on its PYTHONPATH): the cell stage fails its
# third batch that carries deltas, as a defect would.
_FAULT = '''
import stream.pipeline.cells as cells

_process = cells.CellStage.process
_calls = [0]


def process(self, partition, envelopes, now_ms):
    if any(b'"d":[[' in raw for _, raw in envelopes):
        _calls[0] += 1
        if _calls[0] == 3:
            raise RuntimeError("injected fault in the cell stage")
    return _process(self, partition, envelopes, now_ms)


cells.CellStage.process = process
'''


def test_a_batch_that_fails_stops_the_worker_and_a_restart_gives_exact_final_kpis(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """An error no input explains stops the worker at once (exit status 70) rather than letting Faust go on past
    the failed batch; the batch is read again after the restart and the final KPIs are exact.

    Both workers keep their tables on disk (``KPI_STORE=disk://``): the stopped one's files are left behind
    (it exits as a SIGKILL would), the next worker removes them, restores from the changelogs, and deletes its
    own files when it stops."""
    messages, expected = mixed(seed=21)
    sent_beats = beats(names)
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(_FAULT)
    path = os.pathsep.join(filter(None, [str(fault), os.environ.get("PYTHONPATH")]))
    data = tmp_path / "data"
    store = {"KPI_STORE": "disk://", "KPI_DATA_DIR": str(data), **RETENTION}
    faulty = start_worker(names, bootstrap, tmp_path, label="faulty", KPI_BATCH_MAX="20", PYTHONPATH=path, **store)
    started = time.monotonic()
    produce(bootstrap, as_input(names, messages, seed=5))
    produce(bootstrap, sent_beats)
    assert faulty.process.wait(timeout=60) == 70, faulty.log_tail()
    stopped = time.monotonic() - started
    log = faulty.log_path.read_text(errors="replace")
    assert "injected fault in the cell stage" in log and "a cell batch failed" in log, faulty.log_tail()
    left = sorted(path.name for path in data.rglob(f"disk-{faulty.process.pid}-*"))
    assert left == [f"disk-{faulty.process.pid}-cells", f"disk-{faulty.process.pid}-entity-state"], left
    last = start_worker(names, bootstrap, tmp_path, label="last", **store)
    try:
        wait_for_watermark(last)
        assert not last.errors(), last.errors()
        assert not list(data.rglob(f"disk-{faulty.process.pid}-*"))  # the stopped worker's files are gone
        assert len(list(data.rglob(f"disk-{last.process.pid}-*"))) == 2
        status = Path(f"/proc/{last.process.pid}/status").read_text()
    finally:
        assert last.stop() == 0, last.log_tail()
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    assert not list(data.rglob(f"disk-{last.process.pid}-*"))  # a worker stopped cleanly deletes its files
    assert not last.errors(), last.errors()  # its stop included (tables stop before the agents' last writes)
    peak_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    print(f"\nfailed batch: worker stopped with status 70 {stopped:.1f} s after the input was produced; the "
          f"restarted worker (disk store, peak RSS {peak_mb:.0f} MB) removed the files {left} and finished exact")
