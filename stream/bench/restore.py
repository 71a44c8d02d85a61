"""The restore phase: the pipeline worker restarted after SIGTERM, after SIGKILL, and without its local state."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from stream.bench.backlog import produce
from stream.bench.errors import BenchError
from stream.bench.processes import ManagedProcess, worker_argv
from stream.bench.progress import Progress
from stream.bench.recovery_log import read_log, records_past_checkpoints, recovery_records
from stream.bench.results import Restart, RestoreResult
from stream.bench.timing import READY_POLL_S, RESTORE_TIMEOUT_S, STALL_TIMEOUT_S
from stream.bench.watch import fetch_metrics, parse_metrics, wait_ready
from stream.settings import ENVIRONMENT, Settings

EXTRA_SHARE = 0.01  # the batch produced for the worker that is then killed: this share of the backlog ...
EXTRA_MIN = 1000  # ... but at least this many events


def extra_events(backlog: int) -> int:
    """How many events to produce for the worker that is then killed while it handles them."""
    return max(EXTRA_MIN, int(EXTRA_SHARE * backlog))


def restarted(worker: ManagedProcess, port: int, stopped_at: float, progress: Progress) -> Restart:
    """Wait until the just started ``worker`` is ready; its figures, timed from ``stopped_at``.

    Raises:
        BenchError: when the worker exits or is not ready in time.
    """
    ready = wait_ready([worker], [port], worker.name, progress, timeout_s=RESTORE_TIMEOUT_S)
    text = read_log(worker.log_path)
    figures = Restart(ready - stopped_at, ready - worker.spawned, recovery_records(text),
                      records_past_checkpoints(text))
    progress.show(f"restore: the {worker.name} was ready {figures.stop_to_ready_s:.2f} s after the previous "
                  f"worker's stop signal ({figures.spawn_to_ready_s:.2f} s after its spawn; changelog records to "
                  f"read {figures.changelog_records})", force=True)
    return figures


def accounted(port: int) -> int | None:
    """The worker's accounted events now (None when it does not answer)."""
    page = fetch_metrics(port)
    return None if page is None else parse_metrics(page).accounted


def wait_accounted_beyond(worker: ManagedProcess, port: int, baseline: int) -> int:
    """Poll every 0.05 s until the worker has accounted more than ``baseline`` events; returns its count.

    Raises:
        BenchError: when the worker exits or accounts nothing new in time.
    """
    deadline = time.monotonic() + STALL_TIMEOUT_S
    while time.monotonic() < deadline:
        worker.check()
        count = accounted(port)
        if count is not None and count > baseline:
            return count
        time.sleep(READY_POLL_S)
    raise BenchError(f"restore: the {worker.name} accounted none of the extra events within {STALL_TIMEOUT_S:.0f} s")


def measure_restore(bench: Settings, env: Mapping[str, str], port: int, stopped_at: float, work_dir: Path,
                    backlog: int, seed: int, lead_rate: float | None, progress: Progress) -> RestoreResult:
    """The three restarts, each timed from the previous worker's stop signal (see the package docstring).

    Args:
        bench: the run's settings, to produce the extra events with.
        env: the stopped pipeline worker's environment (its app id and data dir).
        stopped_at: when the pipeline worker got its SIGTERM (``time.monotonic``).
        backlog: the events produced for the run, of which 1 % (at least 1000) more are produced here.

    Raises:
        BenchError: when a worker exits, is not ready in time, or handles none of the extra events.
    """
    extra = extra_events(backlog)
    with ManagedProcess("worker restarted after SIGTERM", worker_argv(), env, work_dir / "restore-sigterm.log",
                        work_dir) as worker:
        after_sigterm = restarted(worker, port, stopped_at, progress)
        baseline = accounted(port) or 0
        # Another seed: other event and lead ids, so none of them is a duplicate of the backlog's.
        produce(bench, extra, seed + 1, progress, lead_rate)
        at_kill = wait_accounted_beyond(worker, port, baseline) - baseline
        worker.kill()
        killed_at = signalled(worker)
    progress.show(f"restore: SIGKILL sent to the worker after it accounted {at_kill} of {extra} extra events",
                  force=True)
    with ManagedProcess("worker restarted after SIGKILL", worker_argv(), env, work_dir / "restore-sigkill.log",
                        work_dir) as worker:
        after_sigkill = restarted(worker, port, killed_at, progress)
        worker.stop()
        stopped_at = signalled(worker)
    empty_dir = work_dir / "restore-empty-data"
    empty_dir.mkdir(exist_ok=True)
    empty_env = {**env, ENVIRONMENT["data_dir"][0]: str(empty_dir)}
    with ManagedProcess("worker started without local state", worker_argv(), empty_env,
                        work_dir / "restore-empty.log", work_dir) as worker:
        without_local_state = restarted(worker, port, stopped_at, progress)
    return RestoreResult(after_sigterm, after_sigkill, without_local_state, extra, at_kill)


def signalled(worker: ManagedProcess) -> float:
    """When the bench sent the stopped ``worker`` its stop signal."""
    if worker.signalled_at is None:
        raise BenchError(f"the {worker.name} had exited before the bench stopped it")
    return worker.signalled_at
