"""The phases that run the pipeline worker on the backlog: one worker, then two (and the failover of one)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from stream.bench.errors import BenchError
from stream.bench.failover import changelog_records, measure_failover
from stream.bench.processes import ManagedProcess, stop_all, worker_argv
from stream.bench.progress import Progress
from stream.bench.results import PipelineResult, TwoWorkerResult
from stream.bench.run_settings import settings_env
from stream.bench.watch import PipelineWatch, Timeline
from stream.settings import ENVIRONMENT, Settings

STANDBY_REPLICAS = 1  # each of the two workers keeps a warm copy of the other's table partitions


def measure_pipeline(env: Mapping[str, str], port: int, expected: int, work_dir: Path,
                     progress: Progress) -> tuple[PipelineResult, float]:
    """The pipeline: ``python -m stream worker`` on the backlog, watched through ``/metrics``, then stopped.

    Returns:
        What it measured, and when the worker was sent its SIGTERM (``time.monotonic``), to time the restore.

    Raises:
        BenchError: when the worker exits, does not start, or stalls.
    """
    with ManagedProcess("pipeline worker", worker_argv(), env, work_dir / "worker.log", work_dir) as worker, \
            Timeline(work_dir / "pipeline-timeline.csv", "accounted,kpi_records,pending_leads") as timeline:
        spawned = worker.spawned
        watch = PipelineWatch([port], expected, progress, timeline, cpu=worker.cpu_seconds)
        watch.wait_accounted([worker], spawned)
        rate = watch.rate()
        first_at = watch.accounted.first_at
        assert first_at is not None  # rate() raises otherwise
        progress.show(f"pipeline: accounted {watch.accounted.value}/{expected} in {rate.seconds:.2f} s; "
                      "waiting for the KPI output to quiesce", force=True)
        kpi_settled = watch.wait_kpi_quiet([worker])
        worker.stop()
    if worker.signalled_at is None:
        raise BenchError(f"the {worker.name} had exited before the bench stopped it")
    last = watch.last
    scrapes = watch.scrape_seconds
    return PipelineResult(
        rate=rate, accounted=watch.accounted.value, startup_s=first_at - spawned,
        kpi_quiet_s=watch.kpi.changed_at - first_at if kpi_settled else None, kpi_records=last.kpi_records,
        pending_leads=last.pending_leads, rejected=dict(last.rejected), duplicates=last.duplicates,
        scrape_ms=1000 * sum(scrapes) / len(scrapes) if scrapes else 0.0,
        middle=timeline.span(0.1 * expected, 0.9 * expected), peak_rss_mb=worker.peak_rss_mb,
        ready_s=None if watch.ready_at is None else watch.ready_at - spawned,
        exit_code=worker.returncode, cpu_us_per_event=watch.cpu_per_event_us(),
        state_bytes=store_bytes(work_dir)), worker.signalled_at


def store_bytes(directory: Path) -> int | None:
    """The bytes of every RocksDB store under ``directory`` (a directory with a ``CURRENT`` file), None if none."""
    stores = [marker.parent for marker in directory.rglob("CURRENT")]
    if not stores:
        return None
    return sum(path.stat().st_size for store in stores for path in store.iterdir() if path.is_file())


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different free ports (two calls of ``free_port`` can return the same one)."""
    from stream.brokers.embedded import free_port

    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def measure_two_workers(settings: Settings, app_id: str, expected: int, work_dir: Path,
                        progress: Progress) -> TwoWorkerResult:
    """Two pipeline workers with a standby replica each, in one new consumer group, on the backlog (watched through
    both ``/metrics``); then the second one is killed and the failover measured.

    Raises:
        BenchError: when a worker exits, they do not start, or they stall.
    """
    from stream.kafka.clients import ensure_topics

    group = settings.model_copy(update={"app_id": app_id})
    ensure_topics(group)  # here, not by both workers at once
    ports = distinct_free_ports(2)
    workers = []
    for number, port in enumerate(ports, start=1):
        data_dir = work_dir / f"two-workers-{number}"
        data_dir.mkdir(exist_ok=True)
        env = {**settings_env(group, port, data_dir), ENVIRONMENT["standby_replicas"][0]: str(STANDBY_REPLICAS)}
        workers.append(ManagedProcess(f"worker {number} of two", worker_argv(), env,
                                      work_dir / f"two-workers-{number}.log", work_dir))
    with ExitStack() as running:
        for worker in workers:
            running.enter_context(worker)
        timeline = running.enter_context(Timeline(work_dir / "two-workers-timeline.csv",
                                                  "accounted,kpi_records,pending_leads"))
        spawned = workers[0].spawned
        watch = PipelineWatch(ports, expected, progress, timeline, label="two workers")
        watch.wait_accounted(workers, spawned)
        rate = watch.rate()
        first_at = watch.accounted.first_at
        assert first_at is not None  # rate() raises otherwise
        progress.show(f"two workers: accounted {watch.accounted.value}/{expected} in {rate.seconds:.2f} s; "
                      "waiting for the KPI output to quiesce", force=True)
        # Their output quiet, the standbys have had the time to read the changelogs' last writes.
        watch.wait_kpi_quiet(workers)
        failover = measure_failover(group, workers, ports, progress)
        stop_all(workers)
    return TwoWorkerResult(rate, watch.accounted.value, first_at - spawned,
                           tuple(worker.peak_rss_mb for worker in workers), STANDBY_REPLICAS,
                           changelog_records(group, app_id), failover)
