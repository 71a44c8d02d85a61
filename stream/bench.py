"""``kpi-stream bench``: the pipeline's throughput on a backlog, next to a raw consumer and a bare Faust agent.

One run, all on this machine:

1. start an embedded Tansu broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) and create fresh topics, named
   after a fresh run id, so reruns against the same broker never mix data;
2. produce ``--events`` synthetic events (backfill mode: fixed seed, event times from a whole hour some hours
   ago) and count them per topic;
3. measure, one after another so they do not compete for the CPU:

   (a) a raw aiokafka consumer that only decodes each value with orjson;
   (b) the Faust floor: a bare Faust agent (``stream.bench_floor``) that only counts events;
   the pipeline: ``python -m stream worker`` on the backlog, watched through its ``/metrics``.

How each rate is measured:

- raw consumer: messages / time from the start of the first poll that returned messages (so the Tansu group
  join, ~3 s, is left out) to the last message;
- Faust floor: events / time from its first event's arrival (faust's monitor stamps it) to its last event;
- pipeline: produced events / time from the first ``/metrics`` poll (every 0.2 s) at which
  ``leadgen_events_total + leadgen_events_rejected_total + leadgen_events_duplicate_total`` is non-zero to the
  poll at which that sum reached its final value. It is final when it equals the number produced; but a stage
  change is counted only once its lead arrives, so some may stay pending (``leadgen_pending_leads``): once the
  sum is at least 99 % of the events produced, it is also final when it has not changed for 3 s (and the end is
  the poll where it last changed, not the 3 s later).

After that the bench keeps polling until ``leadgen_kpi_records_total`` has not grown for 3 s (30 s at most),
to report when the KPI output quiesced.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import itertools
import logging
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import orjson

from stream.broker import stop_process
from stream.settings import ENVIRONMENT, Settings

DEFAULT_EVENTS = 100_000
HOURS_AGO = 6  # event times start at a whole hour this many hours ago
POLL_S = 0.2  # /metrics and status polling interval
SETTLE_S = 3.0  # how long a count must stay unchanged to be final
SETTLE_SHARE = 0.99  # the accounted share of produced events from which a settled count is accepted
STARTUP_TIMEOUT_S = 120.0  # subprocess start to first event
STALL_TIMEOUT_S = 60.0  # no progress for this long: give up
KPI_SETTLE_CAP_S = 30.0  # longest wait for the KPI output to quiesce
ACCOUNTED = ("leadgen_events_total", "leadgen_events_rejected_total", "leadgen_events_duplicate_total")


class BenchError(RuntimeError):
    """A measurement could not be completed."""


@dataclass(frozen=True)
class BenchOptions:
    """The command line of ``kpi-stream bench``."""

    events: int
    seed: int
    keep_logs: bool
    floor_mode: str

    @classmethod
    def parse(cls, args: list[str]) -> BenchOptions:
        """Parse the arguments (argparse exits on bad ones)."""
        parser = argparse.ArgumentParser(prog="kpi-stream bench",
                                         description="Measure the pipeline's events/s on a backlog, next to a raw "
                                                     "aiokafka consumer and a bare Faust agent.")
        parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                            help=f"events to produce (default {DEFAULT_EVENTS})")
        parser.add_argument("--seed", type=int, default=1, help="random seed of the traffic model (default 1)")
        parser.add_argument("--keep-logs", action="store_true",
                            help="keep the broker and worker logs (their directory is printed)")
        parser.add_argument("--floor-mode", choices=("take", "each"), default="take",
                            help="how the Faust floor agent reads: batches like the pipeline (take, default) or "
                                 "event by event (each)")
        options = parser.parse_args(args)
        if options.events < 1:
            parser.error("--events must be at least 1")
        return cls(options.events, options.seed, options.keep_logs, options.floor_mode)


@dataclass(frozen=True)
class Rate:
    """A number of events handled in a number of seconds."""

    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Events per second (0 when no time passed)."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class RawResult:
    """What the raw consumer measured."""

    rate: Rate
    with_join: Rate
    undecodable: int


@dataclass(frozen=True)
class PipelineResult:
    """What the pipeline measurement saw."""

    rate: Rate
    accounted: int
    startup_s: float
    kpi_quiet_s: float | None
    kpi_records: int
    pending_leads: float
    rejected: dict[str, int]
    duplicates: int
    scrape_ms: float
    middle: Rate | None  # between 10 % and 90 % accounted


@dataclass(frozen=True)
class Produced:
    """How many events were produced per topic, and how fast."""

    per_topic: dict[str, int]
    per_kind: dict[str, int]  # the same counts, by event kind (the default topic name)
    seconds: float

    @property
    def total(self) -> int:
        """All events produced."""
        return sum(self.per_topic.values())


class Progress:
    """Progress lines on stderr, at most one a second (but the final ones)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._last = 0.0

    def show(self, message: str, force: bool = False) -> None:
        """Print ``message`` if enough time passed since the last one (or ``force``)."""
        now = time.monotonic()
        if force or now - self._last >= self._interval_s:
            self._last = now
            print(f"bench: {message}", file=sys.stderr, flush=True)


class ManagedProcess:
    """A subprocess with its output in a log file, stopped (SIGTERM, then SIGKILL) when the block is left."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path,
                 stop_timeout_s: float = 15.0) -> None:
        self.name = name
        self.log_path = log_path
        self._argv, self._env, self._cwd = argv, dict(env), cwd
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ManagedProcess:
        with self.log_path.open("ab") as log_file:
            # Its own session: Ctrl-C reaches only the bench, which then stops it here.
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module with fixed arguments
                self._argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
                cwd=self._cwd, start_new_session=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def check(self) -> None:
        """Raise if the process exited.

        Raises:
            BenchError: naming the exit code and the log's last lines.
        """
        if self._process is not None and self._process.poll() is not None:
            raise BenchError(f"the {self.name} exited with code {self._process.returncode}; last log lines:\n"
                             f"{tail(self.log_path)}")

    def stop(self) -> None:
        """Stop the process and reap it; killed when it does not stop in time (or on Ctrl-C while waiting)."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, self._stop_timeout_s)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def log_problems(path: Path, limit: int = 40) -> list[str]:
    """Lines of a faust worker's log that look like errors: tracebacks, exceptions and ERROR/CRITICAL records.

    Those logged after the worker got the bench's SIGTERM are marked ``[at shutdown]``.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    found, stopping = [], False
    for line in text.splitlines():
        stopping = stopping or "Signal received" in line
        if any(word in line for word in ("Traceback", "ERROR", "CRITICAL", "Exception")):
            found.append(f"[at shutdown] {line}" if stopping else line)
    return found[:limit]


def bench_settings(settings: Settings, run_id: str) -> Settings:
    """The settings with a fresh app id and fresh topic names, so that runs never read each other's data."""
    return dataclasses.replace(
        settings, app_id=run_id, topic_page_views=f"{run_id}-page-views", topic_leads=f"{run_id}-leads",
        topic_stage_changes=f"{run_id}-stage-changes", topic_spend=f"{run_id}-spend",
        topic_dead_letters=f"{run_id}-kpi-dead-letters", kpi_topic_prefix=f"{run_id}-kpi-",
        web_host="127.0.0.1")


def settings_env(settings: Settings, web_port: int, data_dir: Path) -> dict[str, str]:
    """The environment of a subprocess that must see ``settings`` (the rest comes from this process)."""
    values = {"bootstrap_servers": settings.bootstrap_servers, "app_id": settings.app_id,
              "topic_page_views": settings.topic_page_views, "topic_leads": settings.topic_leads,
              "topic_stage_changes": settings.topic_stage_changes, "topic_spend": settings.topic_spend,
              "topic_dead_letters": settings.topic_dead_letters, "kpi_topic_prefix": settings.kpi_topic_prefix,
              "partitions": str(settings.partitions), "web_host": settings.web_host, "web_port": str(web_port),
              "data_dir": str(data_dir)}
    env = {**os.environ, **{ENVIRONMENT[name][0]: value for name, value in values.items()}}
    rates_var = ENVIRONMENT["exchange_rates"][0]
    if not env.get(rates_var, "").strip():
        env[rates_var] = "EUR=1.08"  # the traffic model has EUR deals
    return env


def start_ms_hours_ago(hours: int) -> int:
    """A whole hour ``hours`` hours ago, in epoch milliseconds."""
    hour_ms = 3_600_000
    return (int(time.time() * 1000) // hour_ms - hours) * hour_ms


def produce(settings: Settings, events: int, seed: int, progress: Progress) -> Produced:
    """Produce the synthetic backlog and count what was delivered per topic.

    Raises:
        BenchError: when not every event was delivered.
    """
    from stream.generator import TrafficModel
    from stream.kafka import confluent_config
    from stream.produce import BatchProducer

    model = TrafficModel(seed=seed, start_ms=start_ms_hours_ago(HOURS_AGO))
    producer = BatchProducer(confluent_config(settings))
    per_topic: Counter[str] = Counter()
    started = time.monotonic()
    # islice: TrafficModel.events(limit) checks the limit once per visit, so it can yield a few events more.
    for sent, (kind, payload) in enumerate(itertools.islice(model.events(events), events), start=1):
        topic = settings.input_topics[kind]
        producer.send(topic, payload)
        per_topic[topic] += 1
        if sent % 10_000 == 0:
            progress.show(f"produced {sent}/{events}")
    producer.flush(timeout_s=120)
    seconds = time.monotonic() - started
    if producer.delivered != events:
        raise BenchError(f"{producer.delivered} of {events} events were delivered")
    progress.show(f"produced {events} events in {seconds:.1f} s", force=True)
    return Produced({topic: per_topic[topic] for topic in settings.input_topics.values()},
                    {kind.value: per_topic[topic] for kind, topic in settings.input_topics.items()}, seconds)


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The connection's security options in the form aiokafka takes."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
        if settings.ssl_cert_file:
            context.load_cert_chain(settings.ssl_cert_file, settings.ssl_key_file or None)
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                       sasl_plain_password=settings.sasl_password)
    return options


def decode_all(values: list[bytes | None]) -> int:
    """Decode every value with orjson; returns how many could not be decoded."""
    failed = 0
    for value in values:
        try:
            orjson.loads(value)  # type: ignore[arg-type]
        except (orjson.JSONDecodeError, TypeError):
            failed += 1
    return failed


async def consume_raw(settings: Settings, group_id: str, expected: int, progress: Progress) -> RawResult:
    """Read every produced message with a bare aiokafka consumer that only decodes the values.

    Raises:
        BenchError: when it stops receiving messages before it has them all.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*settings.input_topics.values(), bootstrap_servers=settings.bootstrap_servers,
                                group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False,
                                **aiokafka_security(settings))
    joining = time.monotonic()
    await consumer.start()  # connects and joins the group (subscribed in the constructor)
    try:
        count = undecodable = 0
        first: float | None = None
        last = last_progress = time.monotonic()
        while count < expected:
            poll_started = time.monotonic()
            batches = await consumer.getmany(timeout_ms=int(POLL_S * 1000))
            for records in batches.values():
                undecodable += decode_all([record.value for record in records])
                count += len(records)
            now = time.monotonic()
            if batches:
                first = poll_started if first is None else first
                last = last_progress = now
            elif now - last_progress > (STALL_TIMEOUT_S if first else STARTUP_TIMEOUT_S):
                raise BenchError(f"the raw consumer got nothing for {now - last_progress:.0f} s "
                                 f"({count}/{expected} read)")
            progress.show(f"raw consumer: consumed {count}/{expected}")
    finally:
        await consumer.stop()
    progress.show(f"raw consumer: consumed {count} in {last - (first or last):.2f} s", force=True)
    return RawResult(Rate(count, last - (first or last)), Rate(count, last - joining), undecodable)


def measure_raw(settings: Settings, run_id: str, expected: int, progress: Progress) -> RawResult:
    """Measurement (a): the raw consumer (aiokafka's group chatter at INFO kept off the progress lines)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        return asyncio.run(consume_raw(settings, f"{run_id}-raw", expected, progress))
    finally:
        logger.setLevel(level)


def read_status(path: Path) -> dict[str, Any] | None:
    """The floor worker's last status, or None before it wrote one."""
    try:
        status: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return status


def measure_floor(env: Mapping[str, str], run_id: str, expected: int, work_dir: Path, mode: str,
                  progress: Progress) -> Rate:
    """Measurement (b): a bare Faust agent counting events, as a worker subprocess.

    Raises:
        BenchError: when the worker exits, does not start, or stalls.
    """
    status_path = work_dir / "floor-status.json"
    floor_env = {**env, "BENCH_FLOOR_APP_ID": f"{run_id}-floor", "BENCH_FLOOR_EXPECTED": str(expected),
                 "BENCH_FLOOR_STATUS": str(status_path), "BENCH_FLOOR_MODE": mode}
    argv = [sys.executable, "-m", "stream.bench_floor", "worker", "-l", "info", "--without-web"]
    with ManagedProcess("Faust floor worker", argv, floor_env, work_dir / "floor.log", work_dir) as floor, \
            Timeline(work_dir / "floor-timeline.csv", "counted") as timeline:
        started = last_change = timeline.started
        count = 0
        while True:
            floor.check()
            status = read_status(status_path)
            now = time.monotonic()
            if status is not None and status["count"] != count:
                count, last_change = status["count"], now
                timeline.add(now, count)
            if status is not None and status["done"]:
                break
            if now - last_change > (STALL_TIMEOUT_S if count else STARTUP_TIMEOUT_S):
                raise BenchError(f"the Faust floor worker made no progress for {now - last_change:.0f} s "
                                 f"({count}/{expected} counted); see {floor.log_path}")
            progress.show(f"faust floor: counted {count}/{expected}")
            time.sleep(POLL_S)
    rate = Rate(status["count"], status["last"] - status["first"])
    progress.show(f"faust floor: counted {rate.events} in {rate.seconds:.2f} s "
                  f"(worker started in {now - started:.1f} s in all)", force=True)
    return rate


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
    """The sums the bench needs from one ``/metrics`` page."""

    accounted: int = 0
    kpi_records: int = 0
    pending_leads: float = 0.0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


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
    return scrape


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
    """Tracks a polled count: when it first became non-zero and when it last changed."""

    value: int = 0
    first_at: float | None = None
    changed_at: float = 0.0

    def observe(self, value: int, now: float) -> None:
        """Record the value polled at ``now``."""
        if value != self.value:
            self.value, self.changed_at = value, now
            if self.first_at is None and value:
                self.first_at = now

    def quiet_for(self, now: float) -> float:
        """Seconds since the value last changed."""
        return now - self.changed_at


class PipelineWatch:
    """Polls a worker's ``/metrics`` until every produced event is accounted for (see the module docstring)."""

    def __init__(self, port: int, expected: int, progress: Progress, timeline: Timeline) -> None:
        self.port, self.expected, self.progress, self.timeline = port, expected, progress, timeline
        self.accounted, self.kpi = Settle(), Settle()
        self.last = Scrape()
        self.scrape_seconds: list[float] = []

    def poll(self) -> float:
        """Scrape once; returns the time of the poll."""
        began = time.monotonic()
        text = fetch_metrics(self.port)
        now = time.monotonic()
        if text is not None:
            self.scrape_seconds.append(now - began)
            self.last = parse_metrics(text)
            self.accounted.observe(self.last.accounted, now)
            self.kpi.observe(self.last.kpi_records, now)
            self.timeline.add(now, self.last.accounted, self.last.kpi_records, self.last.pending_leads)
        return now

    def all_accounted(self, now: float) -> bool:
        """Every event is counted, or at least 99 % and the count settled (stage changes left pending)."""
        if self.accounted.value >= self.expected:
            return True
        return self.accounted.value >= SETTLE_SHARE * self.expected and self.accounted.quiet_for(now) >= SETTLE_S

    def wait_accounted(self, worker: ManagedProcess, spawned: float) -> None:
        """Poll every 0.2 s until all events are accounted for.

        Raises:
            BenchError: when the worker exits, does not start, or stalls.
        """
        while True:
            worker.check()
            now = self.poll()
            if self.all_accounted(now):
                return
            if self.accounted.first_at is None and now - spawned > STARTUP_TIMEOUT_S:
                raise BenchError(f"the pipeline worker processed nothing within {STARTUP_TIMEOUT_S:.0f} s; last log "
                                 f"lines:\n{tail(worker.log_path)}")
            if self.accounted.first_at is not None and self.accounted.quiet_for(now) > STALL_TIMEOUT_S:
                raise BenchError(f"the pipeline stalled at {self.accounted.value}/{self.expected} events accounted "
                                 f"(pending leads {self.last.pending_leads:.0f}); see {worker.log_path}")
            self.progress.show(f"pipeline: accounted {self.accounted.value}/{self.expected}, "
                               f"KPI records {self.kpi.value}")
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))

    def wait_kpi_quiet(self, worker: ManagedProcess) -> bool:
        """Poll until the KPI record count has not grown for 3 s (30 s at most); True when it settled."""
        deadline = time.monotonic() + KPI_SETTLE_CAP_S
        while time.monotonic() < deadline:
            worker.check()
            now = self.poll()
            if self.kpi.quiet_for(now) >= SETTLE_S:
                return True
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
        return False


def measure_pipeline(env: Mapping[str, str], port: int, expected: int, work_dir: Path,
                     progress: Progress) -> PipelineResult:
    """The pipeline: ``python -m stream worker`` on the backlog, watched through ``/metrics``.

    Raises:
        BenchError: when the worker exits, does not start, or stalls.
    """
    argv = [sys.executable, "-m", "stream", "worker"]
    with ManagedProcess("pipeline worker", argv, env, work_dir / "worker.log", work_dir) as worker, \
            Timeline(work_dir / "pipeline-timeline.csv", "accounted,kpi_records,pending_leads") as timeline:
        spawned = timeline.started
        watch = PipelineWatch(port, expected, progress, timeline)
        watch.wait_accounted(worker, spawned)
        first_at = watch.accounted.first_at
        assert first_at is not None  # all_accounted needs a non-zero count
        rate = Rate(expected, watch.accounted.changed_at - first_at)
        progress.show(f"pipeline: accounted {watch.accounted.value}/{expected} in {rate.seconds:.2f} s; "
                      "waiting for the KPI output to quiesce", force=True)
        kpi_settled = watch.wait_kpi_quiet(worker)
    last = watch.last
    scrapes = watch.scrape_seconds
    return PipelineResult(
        rate=rate, accounted=watch.accounted.value, startup_s=first_at - spawned,
        kpi_quiet_s=watch.kpi.changed_at - first_at if kpi_settled else None, kpi_records=last.kpi_records,
        pending_leads=last.pending_leads, rejected=dict(last.rejected), duplicates=last.duplicates,
        scrape_ms=1000 * sum(scrapes) / len(scrapes) if scrapes else 0.0,
        middle=timeline.span(0.1 * expected, 0.9 * expected))


@contextmanager
def broker_for(settings: Settings, work_dir: Path, progress: Progress) -> Iterator[Settings]:
    """The settings pointing at the configured cluster, or at an embedded broker for the block's duration."""
    if settings.bootstrap_servers:
        yield settings
        return
    from stream.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=work_dir / "broker.log")
    try:
        broker.start()
        progress.show(f"embedded Tansu broker on {broker.bootstrap_servers}", force=True)
        yield dataclasses.replace(settings, bootstrap_servers=broker.bootstrap_servers)
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


@dataclass(frozen=True)
class Results:
    """Everything one run measured."""

    produced: Produced
    raw: RawResult
    floor: Rate
    pipeline: PipelineResult
    worker_problems: list[str]


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, 0 when the denominator is 0."""
    return numerator / denominator if denominator else 0.0


def report(results: Results, floor_mode: str, work_dir: Path | None) -> list[str]:
    """The human-readable lines and, last, the JSON line."""
    produced, raw, floor, pipeline = results.produced, results.raw, results.floor, results.pipeline
    total = produced.total
    mix = ", ".join(f"{kind} {count}" for kind, count in produced.per_kind.items())
    lines = [
        f"events produced:        {total} ({mix}) in {produced.seconds:.1f} s",
        f"pipeline:               {pipeline.rate.per_second:10.0f} events/s ({total} events in "
        f"{pipeline.rate.seconds:.2f} s; accounted {pipeline.accounted}, pending leads "
        f"{pipeline.pending_leads:.0f}; worker start to first event {pipeline.startup_s:.1f} s; "
        + (f"{pipeline.middle.per_second:.0f}/s from 10 % to 90 % accounted)" if pipeline.middle else ")"),
        f"(a) raw consumer:       {raw.rate.per_second:10.0f} events/s ({raw.rate.events} in {raw.rate.seconds:.2f} s; "
        f"{raw.with_join.per_second:.0f}/s counting connection and group join; {raw.undecodable} undecodable)",
        f"(b) faust floor ({floor_mode}): {floor.per_second:10.0f} events/s ({floor.events} in {floor.seconds:.2f} s)",
        f"pipeline / faust floor: {ratio(pipeline.rate.per_second, floor.per_second):.3f}",
        f"pipeline / raw:         {ratio(pipeline.rate.per_second, raw.rate.per_second):.3f}",
        f"pipeline outcome:       duplicates {pipeline.duplicates}, rejected "
        f"{dict(sorted(pipeline.rejected.items())) or 0}, KPI records {pipeline.kpi_records}"
        + (f", KPI output quiet {pipeline.kpi_quiet_s:.1f} s after the first event"
           if pipeline.kpi_quiet_s is not None else f", KPI output still growing after {KPI_SETTLE_CAP_S:.0f} s")
        + f"; /metrics scrape {pipeline.scrape_ms:.1f} ms",
        f"worker log:             {len(results.worker_problems)} error-looking lines"
        + "".join(f"\n    {line}" for line in results.worker_problems[:10]),
    ]
    if work_dir is not None:
        lines.append(f"logs kept in {work_dir}")
    lines.append(orjson.dumps({
        "events": total,
        "pipeline_events_per_second": round(pipeline.rate.per_second, 1),
        "raw_events_per_second": round(raw.rate.per_second, 1),
        "faust_floor_events_per_second": round(floor.per_second, 1),
        "pipeline_vs_faust_floor": round(ratio(pipeline.rate.per_second, floor.per_second), 4),
    }).decode())
    return lines


def run_measurements(settings: Settings, options: BenchOptions, work_dir: Path, progress: Progress) -> Results:
    """Create the topics, produce the backlog, and run the three measurements one after another."""
    from stream.broker import free_port
    from stream.kafka import ensure_topics

    run_id = f"bench-{int(time.time())}-{os.getpid()}"
    with broker_for(settings, work_dir, progress) as cluster:
        bench = bench_settings(cluster, run_id)
        progress.show(f"run id {run_id}; creating topics", force=True)
        ensure_topics(bench)
        produced = produce(bench, options.events, options.seed, progress)
        raw = measure_raw(bench, run_id, produced.total, progress)
        port = free_port()
        env = settings_env(bench, port, work_dir)
        floor = measure_floor(env, run_id, produced.total, work_dir, options.floor_mode, progress)
        pipeline = measure_pipeline(env, port, produced.total, work_dir, progress)
    return Results(produced, raw, floor, pipeline, log_problems(work_dir / "worker.log"))


def run_bench(args: list[str], settings: Settings, emit: Callable[[str], None] = print) -> int:
    """Entry point of ``kpi-stream bench``; returns the exit code."""
    from stream.broker import BrokerError
    from stream.kafka import TopicError
    from stream.produce import ProduceError

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
    return 0
