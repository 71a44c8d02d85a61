"""Crashes on the real broker: after SIGKILL the final KPI records still equal the batch computation.

Run with ``-s`` to see the figures that ``docs/reliability.md`` quotes (recovery times, replayed events).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.eventset import mixed
from tests.integration.harness import Names, Worker, produce, start_worker
from tests.integration.outcome import as_input, assert_final_kpis_exact, beats, dead_letter_sources, wait_for_watermark

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNTERS = ("leadgen_events_total", "leadgen_events_duplicate_total", "leadgen_events_rejected_total")


def _kill_when(worker: Worker, accounted: float) -> dict[str, float]:
    """SIGKILL the worker once it has accounted for ``accounted`` input messages; its counters then."""
    worker.wait_until(lambda: worker.accounted() >= accounted, what=f"{accounted:.0f} accounted events")
    counts = {name: worker.total(name) for name in COUNTERS}
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(timeout=10)
    return counts


def test_sigkill_at_several_points_gives_exact_final_kpis(bootstrap: str, names: Names, tmp_path: Path) -> None:
    messages, expected = mixed(seed=13)
    sent_beats = beats(names)
    # A backlog read in small batches, so that each kill lands while batches are in flight.
    sent = produce(bootstrap, as_input(names, messages, seed=4)) + produce(bootstrap, sent_beats)
    counted: list[dict[str, float]] = []
    recoveries: list[float] = []
    killed_at = None
    for label, share in (("first", 0.15), ("second", 0.3), ("third", 0.3)):
        worker = start_worker(names, bootstrap, tmp_path, label=label, KPI_BATCH_MAX="20")
        if killed_at is not None:
            recoveries.append(time.monotonic() - killed_at)
        counted.append(_kill_when(worker, share * sent))
        killed_at = time.monotonic()
    last = start_worker(names, bootstrap, tmp_path, label="last")
    recoveries.append(time.monotonic() - killed_at)
    try:
        wait_for_watermark(last)
        counted.append({name: last.total(name) for name in COUNTERS})
        assert not last.errors(), last.errors()
    finally:
        assert last.stop() == 0, last.log_tail()
    # Nothing lost, nothing counted twice: every KPI key's last record equals the batch computation.
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats)
    # Every rejected message is dead-lettered; a batch replayed after a kill may send its dead letters again.
    dead = Counter(dead_letter_sources(bootstrap, names))
    assert len(dead) == expected["rejected"]
    totals = {name: sum(c[name] for c in counted) for name in COUNTERS}
    replayed = sum(totals.values()) - sent
    # The killed processes' counters count the batches they had in flight again in the next process.
    assert replayed >= 0, totals
    print(f"\nSIGKILL x3: recovery (kill to ready) {', '.join(f'{r:.1f}' for r in recoveries)} s; "
          f"counters over all processes {totals} for {sent} messages; counted again after kills: {replayed:.0f}; "
          f"dead letters re-sent: {sum(dead.values()) - len(dead)}")
