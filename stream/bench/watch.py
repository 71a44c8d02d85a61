"""Watching workers through their ``/metrics``: parsing, settling counts, readiness, timelines."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

from stream.bench.errors import BenchError
from stream.bench.processes import ManagedProcess, tail
from stream.bench.progress import Progress
from stream.bench.results import Rate
from stream.bench.timing import (
    KPI_SETTLE_CAP_S,
    POLL_S,
    READY_POLL_S,
    SETTLE_S,
    SETTLE_SHARE,
    STALL_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
)

ACCOUNTED = ("leadgen_events_total", "leadgen_events_rejected_total", "leadgen_events_duplicate_total")


class Timeline:
    """A CSV file of polled counts over time, kept with the logs.

    Each row has the seconds since the subprocess was started and the wall-clock time (to line up with its log).
    """

    def __init__(self, path: Path, columns: str) -> None:
        self.path, self.columns = path, columns
        self.started = time.monotonic()
        self.rows: list[tuple[float, ...]] = []
        self._file: TextIO | None = None

    def __enter__(self) -> Timeline:
        self._file = self.path.open("w")
        self._file.write(f"seconds,unix_time,{self.columns}\n")
        self.started = time.monotonic()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()

    def add(self, at: float, *values: float) -> None:
        """Append one row for the time ``at`` (``time.monotonic``)."""
        self.rows.append((at, *values))
        if self._file is not None:
            wall = time.time() - (time.monotonic() - at)
            self._file.write(",".join([f"{at - self.started:.3f}", f"{wall:.3f}", *(f"{v:g}" for v in values)])
                             + "\n")

    def span(self, low: float, high: float) -> Rate | None:
        """The rate between the first rows whose first value reached ``low`` and ``high``."""
        low_at = next((row[0] for row in self.rows if row[1] >= low), None)
        high_at = next((row[0] for row in self.rows if row[1] >= high), None)
        if low_at is None or high_at is None or high_at <= low_at:
            return None
        return Rate(int(high - low), high_at - low_at)


@dataclass
class Scrape:
    """The sums the bench needs from one ``/metrics`` page (or from several workers' pages, see ``combine``)."""

    accounted: int = 0
    kpi_records: int = 0
    pending_leads: float = 0.0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    ready: int = 0  # workers reporting leadgen_worker_ready 1
    assigned_partitions: int = 0
    lag: int = 0  # messages left to read on every topic the workers consume (measured by them every 5 s)


def parse_metrics(text: str) -> Scrape:
    """Sum the counters the bench watches over their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ACCOUNTED:
                scrape.accounted += int(sample.value)
            if sample.name == "leadgen_events_rejected_total":
                scrape.rejected[sample.labels.get("reason", "?")] += int(sample.value)
            elif sample.name == "leadgen_events_duplicate_total":
                scrape.duplicates += int(sample.value)
            elif sample.name == "leadgen_kpi_records_total":
                scrape.kpi_records += int(sample.value)
            elif sample.name == "leadgen_pending_leads":
                scrape.pending_leads = sample.value
            elif sample.name == "leadgen_worker_ready":
                scrape.ready = int(sample.value == 1)
            elif sample.name == "leadgen_assigned_partitions":
                scrape.assigned_partitions += int(sample.value)
            elif sample.name == "leadgen_consumer_lag_messages":
                scrape.lag += int(sample.value)
    return scrape


def combine(scrapes: Iterable[Scrape]) -> Scrape:
    """The sums over several workers' pages."""
    total = Scrape()
    for scrape in scrapes:
        total.accounted += scrape.accounted
        total.kpi_records += scrape.kpi_records
        total.pending_leads += scrape.pending_leads
        total.duplicates += scrape.duplicates
        total.rejected.update(scrape.rejected)
        total.ready += scrape.ready
        total.assigned_partitions += scrape.assigned_partitions
        total.lag += scrape.lag
    return total


def fetch_metrics(port: int, timeout_s: float = 2.0) -> str | None:
    """The worker's ``/metrics`` page, or None while it does not answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
        return body.decode() if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


@dataclass
class Settle:
    """Tracks a polled count: when it was last zero, when it first became non-zero and when it last changed."""

    value: int = 0
    first_at: float | None = None
    changed_at: float = 0.0
    zero_at: float | None = None  # the last poll before ``first_at``, which found nothing counted

    def observe(self, value: int, now: float) -> None:
        """Record the value polled at ``now``."""
        if not value and self.first_at is None:
            self.zero_at = now
        if value != self.value:
            self.value, self.changed_at = value, now
            if self.first_at is None and value:
                self.first_at = now

    def quiet_for(self, now: float) -> float:
        """Seconds since the value last changed."""
        return now - self.changed_at


class PipelineWatch:
    """Polls the workers' ``/metrics`` until every produced event is accounted for (see the package docstring).

    With several workers the counts are summed over the last page each one answered, so a worker that misses a
    poll (busy, or still starting) does not make the sum drop.
    """

    def __init__(self, ports: Sequence[int], expected: int, progress: Progress, timeline: Timeline,
                 label: str = "pipeline", fetch: Callable[[int], str | None] = fetch_metrics,
                 cpu: Callable[[], float | None] | None = None) -> None:
        self.ports, self.expected, self.progress, self.timeline = tuple(ports), expected, progress, timeline
        self.label, self._fetch, self._cpu = label, fetch, cpu
        self.cpu_at: dict[float, float] = {}  # the workers' CPU seconds, by the time of the poll they were read at
        self.accounted, self.kpi = Settle(), Settle()
        self.latest: dict[int, Scrape] = {}
        self.last = Scrape()
        self.ready_at: float | None = None  # the first poll at which every worker reported ready
        self.scrape_seconds: list[float] = []

    def record(self, pages: Mapping[int, str | None], now: float) -> None:
        """Take the pages polled at ``now`` (None for a worker that did not answer)."""
        answered = {port: parse_metrics(text) for port, text in pages.items() if text is not None}
        if not answered:
            return
        self.latest.update(answered)
        self.last = combine(self.latest.values())
        self.accounted.observe(self.last.accounted, now)
        self.kpi.observe(self.last.kpi_records, now)
        if self.ready_at is None and self.last.ready == len(self.ports):
            self.ready_at = now
        self.timeline.add(now, self.last.accounted, self.last.kpi_records, self.last.pending_leads)

    def poll(self) -> float:
        """Scrape every worker once; returns the time of the poll."""
        pages: dict[int, str | None] = {}
        for port in self.ports:
            began = time.monotonic()
            pages[port] = self._fetch(port)
            if pages[port] is not None:
                self.scrape_seconds.append(time.monotonic() - began)
        now = time.monotonic()
        cpu = None if self._cpu is None else self._cpu()
        if cpu is not None:
            self.cpu_at[now] = cpu
        self.record(pages, now)
        return now

    def all_accounted(self, now: float) -> bool:
        """Every event is counted (or more, after a re-read), or at least 99 % with nothing left to read and the
        count settled (stage changes still waiting for their lead are counted only when it comes).

        Without the lag, a worker finishing a lead-heavy backlog in batches seconds apart looked settled at
        996,418 of 1,000,000 events.
        """
        if self.accounted.value >= self.expected:
            return True
        return (self.accounted.value >= SETTLE_SHARE * self.expected and self.last.lag == 0
                and self.accounted.quiet_for(now) >= SETTLE_S)

    def span(self) -> tuple[float, float]:
        """The poll times the rate divides between: the first non-zero count, or the poll before it when that
        one already found the final count, and the poll where the count last changed.

        When one poll found nothing counted and the next found the final count (a small backlog, read between
        two polls), the time is taken from the poll that found nothing: at most one poll interval more than it
        took, so the rate is a lower bound rather than a division by zero.

        Raises:
            BenchError: when nothing was counted yet, or everything by the first poll that answered.
        """
        settle = self.accounted
        if settle.first_at is None:
            raise BenchError(f"{self.label}: no event was accounted for")
        if settle.changed_at > settle.first_at:
            return settle.first_at, settle.changed_at
        if settle.zero_at is None:
            raise BenchError(f"{self.label}: every event was accounted for by the first poll the workers answered, "
                             "so there is no time to divide by; run the bench with more --events")
        return settle.zero_at, settle.changed_at

    def rate(self) -> Rate:
        """The produced events over the time of ``span``.

        Raises:
            BenchError: as ``span``.
        """
        start, end = self.span()
        return Rate(self.expected, end - start)

    def cpu_per_event_us(self) -> float | None:
        """The workers' CPU microseconds (user plus system) per produced event, over ``span`` (so start-up and the
        wait for the KPI output to quiesce are left out); None where it was not read."""
        try:
            start, end = self.span()
        except BenchError:
            return None
        if start not in self.cpu_at or end not in self.cpu_at:
            return None
        return 1e6 * (self.cpu_at[end] - self.cpu_at[start]) / self.expected

    def wait_accounted(self, workers: Sequence[ManagedProcess], spawned: float) -> None:
        """Poll every 0.2 s until all events are accounted for.

        Raises:
            BenchError: when a worker exits, they do not start, or they stall.
        """
        logs = ", ".join(str(worker.log_path) for worker in workers)
        while True:
            for worker in workers:
                worker.check()
            now = self.poll()
            if self.all_accounted(now):
                return
            if self.accounted.first_at is None and now - spawned > STARTUP_TIMEOUT_S:
                raise BenchError(f"{self.label}: nothing processed within {STARTUP_TIMEOUT_S:.0f} s; last log "
                                 f"lines:\n" + "\n".join(tail(worker.log_path) for worker in workers))
            if self.accounted.first_at is not None and self.accounted.quiet_for(now) > STALL_TIMEOUT_S:
                raise BenchError(f"{self.label}: stalled at {self.accounted.value}/{self.expected} events accounted "
                                 f"(pending leads {self.last.pending_leads:.0f}); see {logs}")
            self.progress.show(f"{self.label}: accounted {self.accounted.value}/{self.expected}, "
                               f"KPI records {self.kpi.value}")
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))

    def wait_kpi_quiet(self, workers: Sequence[ManagedProcess]) -> bool:
        """Poll until the KPI record count has not grown for 3 s (30 s at most); True when it settled."""
        deadline = time.monotonic() + KPI_SETTLE_CAP_S
        while time.monotonic() < deadline:
            for worker in workers:
                worker.check()
            now = self.poll()
            if self.kpi.quiet_for(now) >= SETTLE_S:
                return True
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
        return False


def all_ready(pages: Mapping[int, str | None], with_partitions: bool) -> bool:
    """Every worker answered with ``leadgen_worker_ready`` 1 (and, ``with_partitions``, has partitions)."""
    scrapes = [parse_metrics(text) for text in pages.values() if text is not None]
    return len(scrapes) == len(pages) and all(
        scrape.ready and (scrape.assigned_partitions > 0 or not with_partitions) for scrape in scrapes)


def wait_ready(workers: Sequence[ManagedProcess], ports: Sequence[int], label: str, progress: Progress,
               with_partitions: bool = False, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
    """Poll every 0.05 s until every worker reports ready (see ``all_ready``); returns the time of that poll.

    Raises:
        BenchError: when a worker exits or is not ready within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in workers:
            worker.check()
        pages = {port: fetch_metrics(port) for port in ports}
        now = time.monotonic()
        if all_ready(pages, with_partitions):
            return now
        if now > deadline:
            raise BenchError(f"{label}: not ready within {timeout_s:.0f} s; last log lines:\n"
                             + "\n".join(tail(worker.log_path) for worker in workers))
        progress.show(f"{label}: waiting for leadgen_worker_ready"
                      + (" and assigned partitions" if with_partitions else ""))
        time.sleep(READY_POLL_S)
