"""One bench run: the broker, the work directory and the phases in order, behind ``run_bench``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from stream.bench.backlog import produce
from stream.bench.baselines import measure_floor, measure_raw
from stream.bench.errors import BenchError
from stream.bench.latency import measure_latency
from stream.bench.options import BenchOptions
from stream.bench.pipeline import measure_pipeline, measure_two_workers
from stream.bench.processes import log_problems
from stream.bench.progress import Progress
from stream.bench.report import report
from stream.bench.restore import measure_restore
from stream.bench.results import Results
from stream.bench.rolling import LOGS as ROLLING_LOGS
from stream.bench.rolling import measure_rolling
from stream.bench.run_settings import bench_settings, settings_env
from stream.settings import Settings

# The logs of the pipeline workers, in the order the phases run; a missing one (a skipped phase) has no lines.
WORKER_LOGS = ("worker.log", "restore-sigterm.log", "restore-sigkill.log", "restore-empty.log", "two-workers-1.log",
               "two-workers-2.log", "latency-worker.log", *ROLLING_LOGS)


@contextmanager
def broker_for(settings: Settings, work_dir: Path, progress: Progress, kind: str = "tansu") -> Iterator[Settings]:
    """The settings pointing at the configured cluster, or at a broker of ``kind`` (``tansu`` or ``kafka``) started
    for the block's duration."""
    if settings.bootstrap_servers:
        yield settings
        return
    from stream.brokers.apache_kafka import KAFKA_VERSION, ApacheKafka
    from stream.brokers.embedded import EmbeddedBroker

    broker: EmbeddedBroker | ApacheKafka
    if kind == "kafka":
        broker, name = ApacheKafka(log_path=work_dir / "broker.log"), f"Apache Kafka {KAFKA_VERSION}"
    else:
        broker, name = EmbeddedBroker(log_path=work_dir / "broker.log"), "embedded Tansu broker"
    try:
        broker.start()
        progress.show(f"{name} on {broker.bootstrap_servers}", force=True)
        # What the broker needs of a worker (Tansu: no idempotent producer, the changelog end probe).
        needs = Settings.from_env({**os.environ, **broker.worker_env})
        yield settings.model_copy(update={"bootstrap_servers": broker.bootstrap_servers,
                                          "idempotent_producer": needs.idempotent_producer,
                                          "verify_changelog_end": needs.verify_changelog_end})
    finally:
        broker.stop()


@contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    """A temporary directory for logs and state, removed afterwards unless it is kept."""
    path = Path(tempfile.mkdtemp(prefix="kpi-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_measurements(settings: Settings, options: BenchOptions, work_dir: Path, progress: Progress) -> Results:
    """Create the topics, produce the backlog, and run the measurements one after another."""
    from stream.brokers.embedded import free_port
    from stream.kafka.clients import ensure_topics

    run_id = f"bench-{int(time.time())}-{os.getpid()}"
    with broker_for(settings, work_dir, progress, options.broker) as cluster:
        bench = bench_settings(cluster, run_id)
        progress.show(f"run id {run_id}; creating topics", force=True)
        ensure_topics(bench)
        produced = produce(bench, options.events, options.seed, progress, options.lead_rate)
        raw = measure_raw(bench, run_id, produced.total, progress)
        port = free_port()
        env = settings_env(bench, port, work_dir)
        floor = measure_floor(env, run_id, produced.total, work_dir, options.floor_mode, progress)
        pipeline, stopped_at = measure_pipeline(env, port, produced.total, work_dir, progress)
        restore = measure_restore(bench, env, port, stopped_at, work_dir, produced.total, options.seed,
                                  options.lead_rate, progress)
        two_workers, two_workers_failure = None, None
        if not options.skip_two_workers:
            try:
                # The two workers read the backlog and the restore phase's extra events.
                two_workers = measure_two_workers(bench, f"{run_id}-two", produced.total + restore.extra_events,
                                                  work_dir, progress)
            except BenchError as exc:  # a worker crashing there should not cost the figures measured before it
                two_workers_failure = str(exc)
                progress.show(f"two workers: failed: {exc}", force=True)
        latency = None if options.skip_latency else measure_latency(cluster, run_id, options, work_dir, progress)
        rolling = None if options.skip_rolling else measure_rolling(cluster, run_id, options, work_dir, progress)
    problems = [f"{name}: {line}" for name in WORKER_LOGS for line in log_problems(work_dir / name)]
    return Results(produced, raw, floor, pipeline, restore, two_workers, latency, problems,
                   two_workers_failure, rolling=rolling)


def run_bench(args: list[str], settings: Settings, emit: Callable[[str], None] = print) -> int:
    """Entry point of ``kpi-stream bench``; returns the exit code."""
    from stream.brokers.embedded import BrokerError
    from stream.kafka.clients import TopicError
    from stream.kafka.produce import ProduceError

    options = BenchOptions.parse(args)
    progress = Progress()
    with work_directory(options.keep_logs) as work_dir:
        try:
            results = run_measurements(settings, options, work_dir, progress)
        except (BenchError, BrokerError, TopicError, ProduceError) as exc:
            print(f"kpi-stream bench: {exc}", file=sys.stderr)
            if options.keep_logs:
                print(f"kpi-stream bench: logs in {work_dir}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("kpi-stream bench: interrupted" + (f"; logs in {work_dir}" if options.keep_logs else ""),
                  file=sys.stderr)
            return 130
        for line in report(results, options.floor_mode, work_dir if options.keep_logs else None):
            emit(line)
    return 1 if results.two_workers_failure is not None else 0
