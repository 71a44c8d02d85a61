"""The rolling-restart phase: two workers under live traffic with probes, each stopped and started again in turn."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from stream.bench.errors import BenchError
from stream.bench.latency import ProbeLog, ProbeReader, await_probes, percentiles_ms, send_live_traffic
from stream.bench.options import BenchOptions
from stream.bench.pipeline import distinct_free_ports
from stream.bench.processes import ManagedProcess, stop_all, worker_argv
from stream.bench.progress import Progress
from stream.bench.results import Rate, RestartStep, RollingResult
from stream.bench.run_settings import bench_settings, settings_env
from stream.bench.timing import LATENCY_WARMUP_S, POLL_S, RESTORE_TIMEOUT_S, ROLLING_PROBE_GRACE_S, ROLLING_SETTLE_S
from stream.bench.watch import fetch_metrics, parse_metrics, wait_ready
from stream.settings import Settings

WORKERS = 2
# The log of each worker process, first start and restart: the restart's own file, so that its lines are not
# taken for the stopped process's shutdown.
LOGS = tuple(f"rolling-{number}{suffix}.log" for number in range(1, WORKERS + 1) for suffix in ("", "-restarted"))


class LiveTraffic(threading.Thread):
    """``send_live_traffic`` in the background until stopped; its error, if any, is raised by ``stop``."""

    def __init__(self, settings: Settings, options: BenchOptions, probes: ProbeLog) -> None:
        super().__init__(name="live-traffic", daemon=True)
        self._settings, self._options, self._probes = settings, options, probes
        self._stopping = threading.Event()
        self.error: BaseException | None = None
        self.sent = Rate(0, 0.0)

    def run(self) -> None:
        """Send until stopped (the producer's errors are kept for ``stop``)."""
        try:
            self.sent = send_live_traffic(self._settings, self._options.latency_rate, self._options.seed,
                                          self._probes, math.inf, lambda: None, self._stopping)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.error = exc

    def check(self) -> None:
        """Raise the traffic's error if it ended with one."""
        if self.error is not None:
            raise self.error
        if not self.is_alive() and not self._stopping.is_set():
            raise BenchError("rolling restart: the live traffic stopped by itself")

    def halt(self) -> None:
        """Stop sending and wait for the thread (a delivery error stays in ``error``)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=60)

    def stop(self) -> Rate:
        """Stop sending, wait for the last messages' delivery, and return the events sent."""
        self.halt()
        if self.error is not None:
            raise self.error
        return self.sent


class MetricsSampler(threading.Thread):
    """Writes each worker's readiness, assigned partitions, lag and accounted events once a second, as CSV.

    Kept with the logs, to tell a restart's delays from a group that was behind already; a worker that does not
    answer (stopped, or starting) has empty columns.
    """

    def __init__(self, path: Path, ports: list[int], started: float) -> None:
        super().__init__(name="rolling-metrics", daemon=True)
        self._path, self._ports, self._origin = path, ports, started
        self._stopping = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        columns = ",".join(f"w{number}_{name}" for number in range(1, len(self._ports) + 1)
                           for name in ("ready", "partitions", "lag", "accounted"))
        with self._path.open("w") as log:
            log.write(f"seconds,{columns}\n")
            while not self._stopping.wait(1.0):
                row = [f"{time.monotonic() - self._origin:.3f}"]
                for port in self._ports:
                    page = fetch_metrics(port, timeout_s=0.5)
                    if page is None:
                        row += ["", "", "", ""]
                        continue
                    scrape = parse_metrics(page)
                    row += [str(scrape.ready), str(scrape.assigned_partitions), str(scrape.lag),
                            str(scrape.accounted)]
                log.write(",".join(row) + "\n")
                log.flush()

    def stop(self) -> None:
        """Stop sampling and wait for it."""
        self._stopping.set()
        self.join(timeout=5)


class RollingWorkers:
    """The phase's workers, each a process that can be stopped and started again with the same settings."""

    def __init__(self, envs: Mapping[int, Mapping[str, str]], work_dir: Path) -> None:
        self._envs, self._work_dir = envs, work_dir
        self.running: dict[int, ManagedProcess] = {}

    def start(self, number: int, log_name: str) -> ManagedProcess:
        """Spawn worker ``number`` (1-based), its output in ``log_name``."""
        process = ManagedProcess(f"rolling worker {number}", worker_argv(), self._envs[number],
                                 self._work_dir / log_name, self._work_dir)
        self.running[number] = process.__enter__()
        return process

    def check(self) -> None:
        """Raise if a running worker exited."""
        for process in self.running.values():
            process.check()

    def stop_all(self) -> None:
        """Stop every running worker."""
        stop_all(list(self.running.values()))


def hold(seconds: float, workers: RollingWorkers, traffic: LiveTraffic, probes: ProbeLog, progress: Progress,
         label: str) -> None:
    """Keep the traffic going for ``seconds`` while watching that nothing stopped."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        workers.check()
        traffic.check()
        progress.show(f"rolling restart: {label}; {len(probes.sent)} probes sent, {len(probes.seen)} seen")
        time.sleep(POLL_S)


def restart(number: int, workers: RollingWorkers, ports: list[int], traffic: LiveTraffic, progress: Progress,
            steps_log: TextIO, started: float) -> RestartStep:
    """SIGTERM worker ``number``, start it again on its data dir, and wait until both workers are ready.

    Its SIGTERM, exit and ready times, in seconds since ``started``, go to ``steps_log``.
    """
    traffic.check()
    process = workers.running.pop(number)
    progress.show(f"rolling restart: stopping worker {number} (SIGTERM)", force=True)
    stopping = time.monotonic()
    process.stop()
    stopped = time.monotonic()
    restarted = workers.start(number, f"rolling-{number}-restarted.log")
    ready_at = wait_ready(list(workers.running.values()), ports, f"rolling restart of worker {number}", progress,
                          with_partitions=True, timeout_s=RESTORE_TIMEOUT_S)
    step = RestartStep(number, stopped - stopping, ready_at - restarted.spawned, process.returncode)
    steps_log.write(f"{number},{stopping - started:.3f},{stopped - started:.3f},{ready_at - started:.3f}\n")
    progress.show(f"rolling restart: worker {number} stopped in {step.stop_s:.1f} s (exit code "
                  f"{step.exit_code}), ready again {step.ready_s:.1f} s after its spawn", force=True)
    return step


def write_probes(path: Path, probes: ProbeLog, started: float) -> None:
    """Each probe's send time (seconds since ``started``), delay (empty: missing) and wrong lead count, as CSV."""
    with path.open("w") as log:
        log.write("probe,sent_s,delay_ms,wrong_leads\n")
        for number, sent in sorted(probes.sent.items()):
            seen = probes.seen.get(number)
            delay = "" if seen is None else f"{1000 * (seen - sent):.1f}"
            log.write(f"{number},{sent - started:.3f},{delay},{probes.wrong_leads.get(number, '')}\n")


def measure_rolling(cluster: Settings, run_id: str, options: BenchOptions, work_dir: Path,
                    progress: Progress) -> RollingResult:
    """Two workers in one group on new topics under live traffic with probes, restarted one after the other.

    Raises:
        BenchError: when a worker exits or is not ready in time, or the probe reader fails.
    """
    from stream.core.kpis import FAMILY_COST_PER_LEAD
    from stream.kafka.clients import ensure_topics

    live = bench_settings(cluster, f"{run_id}-rolling")
    partitions = ensure_topics(live)  # here, not by both workers at once
    kpi_topic = live.kpi_topic(FAMILY_COST_PER_LEAD)
    ports = distinct_free_ports(WORKERS)
    envs = {}
    for number, port in enumerate(ports, start=1):
        data_dir = work_dir / f"rolling-{number}"
        data_dir.mkdir(exist_ok=True)
        envs[number] = settings_env(live, port, data_dir)
    workers = RollingWorkers(envs, work_dir)
    probes = ProbeLog()
    steps = []
    started = time.monotonic()
    first_sigterm = math.inf
    with ExitStack() as cleanup:
        cleanup.callback(workers.stop_all)
        steps_log = cleanup.enter_context((work_dir / "rolling-steps.csv").open("w"))
        steps_log.write("worker,sigterm_s,exited_s,ready_s\n")
        sampler = MetricsSampler(work_dir / "rolling-timeline.csv", ports, started)
        sampler.start()
        cleanup.callback(sampler.stop)
        for number in envs:
            workers.start(number, f"rolling-{number}.log")
        wait_ready(list(workers.running.values()), ports, "rolling restart", progress, with_partitions=True)
        reader = ProbeReader(live, kpi_topic, partitions[kpi_topic], probes)
        reader.start()
        cleanup.callback(reader.stop)
        traffic = LiveTraffic(live, options, probes)
        traffic.start()
        cleanup.callback(traffic.halt)
        progress.show(f"rolling restart: both workers ready; live traffic, probes after {LATENCY_WARMUP_S:.0f} s",
                      force=True)
        hold(LATENCY_WARMUP_S + ROLLING_SETTLE_S, workers, traffic, probes, progress, "before the restarts")
        first_sigterm = time.monotonic()
        for number in envs:
            steps.append(restart(number, workers, ports, traffic, progress, steps_log, started))
        hold(ROLLING_SETTLE_S, workers, traffic, probes, progress, "after the restarts")
        sent = traffic.stop()
        await_probes(probes, reader, ROLLING_PROBE_GRACE_S, workers.check, progress, "rolling restart")
        if reader.error is not None:
            raise BenchError(f"rolling restart: the probe reader failed: {reader.error}")
    write_probes(work_dir / "rolling-probes.csv", probes, started)
    latencies, before = probes.latencies_us(), probes.waited_until_us(first_sigterm)
    p50, p99 = percentiles_ms(latencies, (0.5, 0.99))
    result = RollingResult(max_delay_ms=latencies[-1] / 1000 if latencies else None,
                           before_max_ms=before[-1] / 1000 if before else None, p50_ms=p50, p99_ms=p99,
                           probes_sent=len(probes.sent), probes_seen=len(probes.seen),
                           miscounted=len(probes.miscounted()), steps=tuple(steps), traffic=sent)
    progress.show(f"rolling restart: {result.probes_seen}/{result.probes_sent} probes seen, "
                  f"{result.miscounted} miscounted", force=True)
    return result
