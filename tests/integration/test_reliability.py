"""Crashes on the real broker: after SIGKILL the final KPI records still equal the batch computation.

A worker restarted on its own ``KPI_DATA_DIR`` reuses its tables' local files (``KPI_STORE=disk://``) and reads
only the changelog past their offsets; the tests assert from its log that it did (``_local_state``), and that
files it cannot trust (deleted, corrupted, from before another owner) are rebuilt or brought up to date.

Run with ``-s`` to see the figures that ``docs/reliability.md`` quotes (recovery times, counters).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.brokers.embedded import free_port
from tests.conftest import RunningBroker
from tests.eventset import mixed
from tests.integration.harness import (
    ACCOUNTING_COUNTERS,
    Names,
    Worker,
    assert_input_as_sent,
    produce,
    start_worker,
)
from tests.integration.outcome import (
    as_input,
    assert_final_kpis_exact,
    beats,
    dead_letter_reasons,
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
TABLES = ("cells", "entity-state")

# How a worker found a table's local files when it opened them (stream.state.disk logs one of these per table),
# and, per partition it was assigned, whether the changelog could bring them up to date and how far.
_OPENED = re.compile(r"table ([\w-]+): (reusing local state|no local state|local state in \S+ cannot be trusted)")
_CHECKED = re.compile(r"table ([\w-]+) partition \d+: local state "
                      r"(?:at changelog offset \d+; (\d+) records past it|cannot be trusted)")
_FOUND = {"reusing local state": "reused", "no local state": "none"}


def _local_state(worker: Worker) -> dict[str, str]:
    """Per table, how the worker found its local files: "reused", "none" or "untrusted" (files it could not open or
    read back, of another identity, or reused files with a partition the changelog could not bring up to date)."""
    log = worker.log_path.read_text(errors="replace")
    found = {table: _FOUND.get(how, "untrusted") for table, how in _OPENED.findall(log)}
    for table, past in _CHECKED.findall(log):
        if not past:
            found[table] = "untrusted"
    return found


def _records_past(worker: Worker) -> int:
    """The changelog records past their local state's offsets the worker had to read, over all tables and
    partitions it was assigned on start."""
    return sum(int(past) for _, past in _CHECKED.findall(worker.log_path.read_text(errors="replace")) if past)


def _assert_reused(worker: Worker) -> int:
    """Both tables' local files were reused, none rebuilt; the changelog records the worker read past them."""
    assert _local_state(worker) == dict.fromkeys(TABLES, "reused"), worker.log_tail()
    return _records_past(worker)


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
    third by SIGKILL, the second by SIGTERM (a graceful stop). The fourth finishes; the final KPIs are exact.

    They are one worker restarted on its own ``KPI_DATA_DIR``: each restart reuses the files the stopped one left
    (asserted from its log) and reads only the changelog past their offsets."""
    messages, expected = mixed(seed=13)
    sent_beats = beats(names)
    # A backlog read in small batches, so that each kill lands while batches are in flight.
    sent = produce(bootstrap, as_input(names, messages, seed=4)) + produce(bootstrap, sent_beats)
    counted: list[dict[str, float]] = []
    recoveries: list[float] = []
    read_past: list[int] = []
    killed_at = None
    data = {"KPI_DATA_DIR": str(tmp_path / "data"), **RETENTION}
    stops = (("first", 0.15, signal.SIGKILL), ("second", 0.3, signal.SIGTERM), ("third", 0.3, signal.SIGKILL))
    for label, share, sig in stops:
        worker = start_worker(names, bootstrap, tmp_path, label=label, KPI_BATCH_MAX="20", **data)
        if killed_at is not None:
            recoveries.append(time.monotonic() - killed_at)
        counted.append(_kill_when(worker, share * sent, sig))
        killed_at = time.monotonic()
        if label == "first":
            assert _local_state(worker) == dict.fromkeys(TABLES, "none"), worker.log_tail()
        else:
            read_past.append(_assert_reused(worker))
    last = start_worker(names, bootstrap, tmp_path, label="last", **data)
    recoveries.append(time.monotonic() - killed_at)
    try:
        read_past.append(_assert_reused(last))
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
          f"local state reused by each restart, changelog records read past it {read_past}; "
          f"counters summed over the 4 processes {totals} for {sent} messages (expected valid "
          f"{expected['valid'] + len(sent_beats)}, duplicate {expected['duplicate']}, rejected "
          f"{expected['rejected']}); "
          f"dead letters re-sent: {sum(dead.values()) - len(dead)}; late cell contributions (replays reaching "
          f"dropped cells) {sum(c['late_contributions'] for c in counted):.0f}")


def test_sigkill_one_of_two_workers_and_a_third_joining_gives_exact_final_kpis(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """Two workers split the partitions; one is killed, the other takes over its partitions and state; the killed
    one's slot joins again mid-stream as a third worker. The final KPI records equal the batch computation.

    The third is the killed worker restarted on its own ``KPI_DATA_DIR``: it reuses the files the kill left
    (asserted from its log), whose partitions the survivor owned and wrote in the meantime, and reads the
    changelog past them."""
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
        third = start_worker(names, bootstrap, tmp_path, label="third", KPI_DATA_DIR=str(tmp_path / "data-two"))
        read_past = _assert_reused(third)
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
    print(f"\nscale-out: survivor owned all 4 entity partitions {takeover:.1f} s after the kill; the killed "
          f"worker restarted on its files read {read_past} changelog records past them")


def test_broker_paused_for_20_seconds_mid_stream_gives_exact_final_kpis(
        names: Names, tmp_path: Path, new_broker: Callable[[Path], RunningBroker]) -> None:
    """SIGSTOP the broker for 20 s while events flow; after SIGCONT the worker carries on by itself.

    The worker never stops: its tables stay in the files it made at start (a rejoin of the group after the stall
    keeps them; nothing is rebuilt, asserted from its log)."""
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
        assert _local_state(worker) == dict.fromkeys(TABLES, "none"), worker.log_tail()
    finally:
        worker.stop()
    # The input is as sent, each message once and in order, whatever the producer met when the broker resumed:
    # checked first, as a reordered or repeated input message would make late or extra dead letters that are
    # the test's doing, not the worker's.
    assert_input_as_sent(bootstrap, payload + sent_beats)
    # Nothing was read twice, so no contribution may have reached a closed window (a watermark ahead of
    # events still to come); checked first, as it names the cause of the KPI mismatch it would lead to.
    assert counts["late_contributions"] == 0, counts
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"], (
        counts, sorted(set(dead_letter_reasons(bootstrap, names))))
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

    Both workers keep their tables on disk (``KPI_STORE=disk://``) in one ``KPI_DATA_DIR``: the stopped one's
    files are left at ``<app id>-<table>`` (it exits as a SIGKILL would, marked as not stopped cleanly), the
    restarted worker reuses them, reading only the changelog past their offsets, and keeps them when it stops."""
    messages, expected = mixed(seed=21)
    sent_beats = beats(names)
    path = _sitecustomize(tmp_path / "fault", _FAULT)
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
    left = sorted(path.name for path in data.glob("*/tables/*") if path.is_dir())
    assert left == [f"{names.app_id}-{table}" for table in TABLES], left
    last = start_worker(names, bootstrap, tmp_path, label="last", **store)
    try:
        read_past = _assert_reused(last)
        assert "did not stop cleanly" in last.log_path.read_text(errors="replace"), last.log_tail()
        wait_for_watermark(last)
        assert not last.errors(), last.errors()
        status = Path(f"/proc/{last.process.pid}/status").read_text()
    finally:
        assert last.stop() == 0, last.log_tail()
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    kept = sorted(path.name for path in data.glob("*/tables/*") if path.is_dir())
    assert kept == left, kept  # kept for the next worker, and no files of the process's own
    assert not last.errors(), last.errors()  # its stop included (tables stop before the agents' last writes)
    peak_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    print(f"\nfailed batch: worker stopped with status 70 {stopped:.1f} s after the input was produced; the "
          f"restarted worker (disk store, peak RSS {peak_mb:.0f} MB) reused the files it left, reading {read_past} "
          "changelog records past them, and finished exact")


def _sitecustomize(directory: Path, source: str) -> str:
    """A PYTHONPATH whose ``sitecustomize`` module (run by the worker's interpreter at start-up) is ``source``."""
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(source)
    return os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))


def _run_part(worker: Worker, bootstrap: str, part: list[tuple[str, int, bytes]]) -> int:
    """Produce ``part`` and wait until the worker has handled most of it and its output has settled."""
    sent = produce(bootstrap, part)
    # Stage changes whose lead comes in a later part wait uncounted: most of the part, then quiet.
    worker.wait_until(lambda: worker.accounted() >= len(part) * 0.5, what="most of the part handled")
    worker.wait_quiet("leadgen_events_total")
    worker.wait_quiet("leadgen_kpi_records_total")
    return sent


def _finish(worker: Worker) -> None:
    """Wait until the worker has made every window final (unless it is stopped on an error), then stop it."""
    try:
        if sys.exc_info()[0] is None:
            wait_for_watermark(worker)
            assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_a_worker_restarted_on_files_from_before_another_owner_reads_its_changelog_tail_and_is_exact(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """Worker A handles a third of the input and stops; worker B, on files of its own, owns every partition for
    the second third and stops; A restarts on its old files. A's files are behind the changelogs B wrote: A
    reuses them and reads the records past their offsets (asserted from its log), and the final KPIs are exact."""
    messages, expected = mixed(seed=31)
    payload = as_input(names, messages, seed=9)
    sent_beats = beats(names)
    third = len(payload) // 3
    a_data = {"KPI_DATA_DIR": str(tmp_path / "data-a"), **RETENTION}
    first = start_worker(names, bootstrap, tmp_path, label="a", KPI_BATCH_MAX="20", **a_data)
    try:
        sent = _run_part(first, bootstrap, payload[:third])
    finally:
        assert first.stop() == 0, first.log_tail()
    other = start_worker(names, bootstrap, tmp_path, label="b", KPI_BATCH_MAX="20", **RETENTION)
    try:
        assert _local_state(other) == dict.fromkeys(TABLES, "none"), other.log_tail()
        sent += _run_part(other, bootstrap, payload[third:2 * third])
    finally:
        assert other.stop() == 0, other.log_tail()
    restarted_at = time.monotonic()
    again = start_worker(names, bootstrap, tmp_path, label="a-again", **a_data)
    ready = time.monotonic() - restarted_at
    try:
        read_past = _assert_reused(again)
        assert read_past > 0, again.log_tail()  # B's changelog records, past A's offsets
        sent += produce(bootstrap, payload[2 * third:]) + produce(bootstrap, sent_beats)
    finally:
        _finish(again)
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    assert unhandled_inputs(bootstrap, names) == []
    assert sent == len(payload) + len(sent_beats)
    print(f"\nfiles from before another owner: A restarted on them, ready in {ready:.1f} s, read {read_past} "
          "changelog records past their offsets (written by B), exact")


def _db(data: Path, names: Names, table: str) -> Path:
    """A table's RocksDB directory under a worker's KPI_DATA_DIR."""
    found = list(data.glob(f"*/tables/{names.app_id}-{table}/db"))
    assert len(found) == 1, found
    return found[0]


def _sst_files(db: Path) -> list[Path]:
    """The table files of a RocksDB directory, largest first (a worker's clean stop flushes its writes to one)."""
    files = sorted(db.glob("*.sst"), key=lambda path: path.stat().st_size, reverse=True)
    assert files, f"no .sst file in {db}: {sorted(path.name for path in db.iterdir())}"
    return files


def _overwrite_middle(path: Path, length: int = 64) -> None:
    """Overwrite ``length`` bytes in the middle of a file, as a bad disk or a stray write would."""
    size = path.stat().st_size
    length = min(length, max(size // 4, 1))
    with path.open("r+b") as file:
        file.seek((size - length) // 2)
        file.write(b"\xa5" * length)


def test_local_files_deleted_or_corrupted_while_stopped_are_rebuilt_and_exact(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """One worker restarted three times on its KPI_DATA_DIR, its files damaged while it is stopped: a table's
    whole RocksDB directory deleted, bytes overwritten in the middle of a table's largest .sst file, then every
    .sst file of one table deleted and the CURRENT file of the other overwritten. Each restart logs why it
    rebuilds each damaged table (and reuses the other): none is reused silently. The final KPIs are exact."""
    messages, expected = mixed(seed=37)
    payload = as_input(names, messages, seed=10)
    sent_beats = beats(names)
    data = tmp_path / "data"
    store = {"KPI_DATA_DIR": str(data), **RETENTION}
    cells, entities = TABLES

    def delete_db() -> None:
        shutil.rmtree(_db(data, names, cells))

    def corrupt_sst() -> None:
        _overwrite_middle(_sst_files(_db(data, names, entities))[0])

    def delete_sst_and_corrupt_current() -> None:
        for path in _sst_files(_db(data, names, cells)):
            path.unlink()
        _overwrite_middle(_db(data, names, entities) / "CURRENT", length=4)

    # (damage done after the stop, how the next worker must find each table's files)
    rounds: list[tuple[Callable[[], None] | None, dict[str, str]]] = [
        (None, {cells: "none", entities: "none"}),
        (delete_db, {cells: "none", entities: "reused"}),
        (corrupt_sst, {cells: "reused", entities: "untrusted"}),
        (delete_sst_and_corrupt_current, {cells: "untrusted", entities: "untrusted"}),
    ]
    quarter = len(payload) // 4
    sent = 0
    rebuilt: list[str] = []
    for number, (damage, found) in enumerate(rounds):
        if damage is not None:
            damage()
        worker = start_worker(names, bootstrap, tmp_path, label=f"round-{number}", KPI_BATCH_MAX="20", **store)
        try:
            assert _local_state(worker) == found, worker.log_tail()
            whys = re.findall(r"cannot be trusted: (.{0,160})", worker.log_path.read_text(errors="replace"))
            rebuilt += [re.sub(r"/\S+", "<path>", why) for why in whys]
            if number < len(rounds) - 1:
                sent += _run_part(worker, bootstrap, payload[number * quarter:(number + 1) * quarter])
            else:
                sent += produce(bootstrap, payload[number * quarter:]) + produce(bootstrap, sent_beats)
        finally:
            if number < len(rounds) - 1:
                assert worker.stop() == 0, worker.log_tail()
            else:
                _finish(worker)
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    assert sent == len(payload) + len(sent_beats)
    print("\ndamaged local files: every damaged table rebuilt from its changelog, exact; why: "
          + "; ".join(rebuilt))


# The worker's disk store SIGKILLs its process at one of its batch writes (the ``AT``th that holds writes): just
# before it (the batch's changelog sends delivered, its local write not made) or just after it (the input offsets
# of the batch not committed).
_KILL_IN_COMMIT = '''
import os
import signal
import sys

import stream.state.disk as disk

WHEN, AT = {when!r}, {at}
_commit = disk.DiskStore.commit
_writes = [0]


def commit(self, offsets):
    if self.data.pending:
        _writes[0] += 1
    hit = bool(self.data.pending) and _writes[0] == AT
    if hit and WHEN == "before":
        print("injected SIGKILL before the local write of a batch", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    _commit(self, offsets)
    if hit and WHEN == "after":
        print("injected SIGKILL after the local write of a batch", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


disk.DiskStore.commit = commit
'''


def test_a_sigkill_in_the_middle_of_writing_a_batch_is_reused_and_exact(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """One worker on one KPI_DATA_DIR is SIGKILLed in its 6th local batch write, first between the batch's
    changelog delivery and its local write, then, restarted, right after the local write; a third start finishes.
    Each restart reuses the files (asserted from its log); after the first kill the changelog holds records past
    their offsets, which it reads. The final KPIs are exact."""
    messages, expected = mixed(seed=41)
    sent_beats = beats(names)
    store = {"KPI_DATA_DIR": str(tmp_path / "data"), **RETENTION}
    payload = as_input(names, messages, seed=11)
    assert produce(bootstrap, payload) + produce(bootstrap, sent_beats) == len(payload) + len(sent_beats)
    read_past: list[int] = []
    for when in ("before", "after"):
        path = _sitecustomize(tmp_path / f"kill-{when}", _KILL_IN_COMMIT.format(when=when, at=6))
        # Not waited for: the backlog is there, and the kill may come before the worker reports ready.
        env = names.env(bootstrap, free_port(), KPI_BATCH_MAX="20", PYTHONPATH=path, **store)
        worker = Worker(env, tmp_path / f"kill-{when}.log")
        assert worker.process.wait(timeout=90) == -signal.SIGKILL, worker.log_tail()
        log = worker.log_path.read_text(errors="replace")
        assert f"injected SIGKILL {when} the local write" in log, worker.log_tail()
        if when == "after":
            read_past.append(_assert_reused(worker))
    last = start_worker(names, bootstrap, tmp_path, label="last", **store)
    try:
        read_past.append(_assert_reused(last))
    finally:
        _finish(last)
    # The first kill left a delivered batch out of the files: the second worker read it from the changelog.
    assert read_past[0] > 0, read_past
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    assert len(set(dead_letter_sources(bootstrap, names))) == expected["rejected"]
    print(f"\nSIGKILL before and after a batch's local write: each restart reused the files, reading {read_past} "
          "changelog records past them; exact")
