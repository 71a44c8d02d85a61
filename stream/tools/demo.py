"""``kpi-stream demo``: broker (unless one is configured), topics, synthetic traffic, the worker, a live view."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from stream.brokers.embedded import EmbeddedBroker, free_port, stop_process
from stream.core.calendar import MONTH, Calendar
from stream.core.kpis import FAMILIES
from stream.kafka.clients import confluent_config, ensure_topics, producer_config
from stream.kafka.produce import BatchProducer, ProduceError, produce_paced
from stream.settings import ENVIRONMENT, Settings
from stream.tools.generator import TrafficModel

DEMO_RATES = "EUR=1.08,GBP=1.27"
HOUR_MS = 3_600_000


@dataclass
class KpiBoard:
    """The last record per key of the KPI topics, filled by a background reader."""

    records: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self, kpi: str, start: str, size: str = "1h", **dimensions: str) -> dict[str, Any] | None:
        with self.lock:
            for record in self.records.values():
                if (record["kpi"] == kpi and record["window"]["size"] == size
                        and record["window"]["start"] == start and record["dimensions"] == dimensions):
                    return record
        return None


@dataclass
class Feed:
    """What the demo's two threads share with the live view: the KPI board, the events sent so far, and why a
    thread stopped early."""

    board: KpiBoard = field(default_factory=KpiBoard)
    sent: int = 0
    problems: list[str] = field(default_factory=list)


def _read_kpis(settings: Settings, feed: Feed, stop: threading.Event) -> None:
    """Fill the board from the KPI topics until ``stop`` is set; the consumer lives and is closed on this thread."""
    consumer = Consumer({**confluent_config(settings), "group.id": f"kpi-demo-view-{os.getpid()}",
                         "enable.auto.commit": False, "log_level": 0})
    try:
        topics = [settings.kpi_topic(family) for family in FAMILIES]
        metadata = consumer.list_topics(timeout=10).topics
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic in topics
                         for p in metadata[topic].partitions])
        while not stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error() or message.key() is None or message.value() is None:
                continue
            with feed.board.lock:
                feed.board.records[message.key()] = orjson.loads(message.value())  # type: ignore[index, arg-type]
    except KafkaException as exc:  # the KPI topics could not be listed
        feed.problems.append(f"the KPI view stopped reading: {exc}")
    finally:
        consumer.close()


def _generate(settings: Settings, model: TrafficModel, rate: float, feed: Feed, stop: threading.Event) -> None:
    """Send synthetic traffic until ``stop`` is set; the producer lives and is closed on this thread."""
    producer = BatchProducer(producer_config(settings))
    try:
        for count in produce_paced(producer, settings.input_topics, model.events(), rate, None,
                                   should_stop=stop.is_set):
            feed.sent = count
    except ProduceError as exc:  # the last sends were not delivered in time
        feed.problems.append(f"the traffic generator stopped: {exc}")
    finally:
        producer.close()


@contextmanager
def _background(settings: Settings, options: argparse.Namespace, feed: Feed) -> Iterator[threading.Event]:
    """The traffic generator and the KPI reader, each on a thread of its own, while the block runs; then both are
    told to stop and joined, whatever ended the block. The block gets the generator's stop, to end the traffic
    first and still read the last KPI records.

    The join needs no timeout: the reader stops within its poll (0.2 s) or its topic listing (10 s), the
    generator within its last flush (30 s) and its producer's close (5 s).
    """
    stop_traffic, stop = threading.Event(), threading.Event()
    model = TrafficModel(seed=options.seed, start_ms=int(time.time() * 1000), time_scale=20.0,
                         visits_per_second=options.rate / 3.5, clock_ms=lambda: int(time.time() * 1000))
    threads = [threading.Thread(target=_generate, args=(settings, model, options.rate, feed, stop_traffic),
                                name="generator"),
               threading.Thread(target=_read_kpis, args=(settings, feed, stop), name="kpi-reader")]
    started: list[threading.Thread] = []
    try:
        for thread in threads:
            thread.start()
            started.append(thread)
        yield stop_traffic
    finally:
        stop_traffic.set()
        stop.set()
        for thread in started:
            thread.join()


def _settle_seconds(settings: Settings) -> float:
    """How long the view goes on once the traffic stopped, so that its last frame shows every KPI's last record:
    a record held back (``KPI_RECORD_INTERVAL``) goes out at its cell partition's next batch, which the worker's
    progress report (``KPI_WATERMARK_INTERVAL``) brings without traffic; twice that, and a second for the hops."""
    return 2 * (settings.record_interval_ms + settings.watermark_interval_ms) / 1000 + 1.0


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:  # noqa: S310
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "pct":
        return f"{value * 100:.1f} %"
    if kind == "duration":
        return f"{value / 60:.1f} min"
    if kind == "ratio":
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def _view(settings: Settings, feed: Feed, port: int, started: float) -> Group:
    board = feed.board
    samples = _metrics(port)
    now = int(time.time() * 1000)
    calendar = Calendar(settings.timezone, settings.week_start)  # the worker's, where its hours start
    start = calendar.format(calendar.start(now, HOUR_MS))
    valid, duplicates, rejected = (_sum(samples, f"leadgen_events{suffix}_total")
                                   for suffix in ("", "_duplicate", "_rejected"))
    watermark = _sum(samples, 'leadgen_watermark_timestamp_seconds') / 2 if samples else 0
    header = Table.grid(padding=(0, 3))
    header.add_row(f"sent {feed.sent:,}", f"valid {valid:,.0f}", f"duplicates {duplicates:,.0f}",
                   f"rejected {rejected:,.0f}", f"{valid / max(time.time() - started, 1):,.0f} valid/s",
                   f"watermark lag {max(now / 1000 - watermark, 0):,.1f} s" if watermark else "watermark –")
    table = Table(title=f"Live KPIs, hour starting {start} ({settings.rates.reporting_currency})",
                  caption=f"metrics: http://127.0.0.1:{port}/metrics   Ctrl-C stops everything")
    for column in ("channel", "leads", "spend", "cost per lead", "lead→MQL", "MQL→SAL", "median lead→MQL"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    channels = sorted({record["dimensions"]["channel"] for record in list(board.records.values())
                       if "channel" in record["dimensions"] and record["window"]["start"] == start})
    for channel in [*channels, None]:
        dims = {} if channel is None else {"channel": channel}
        cpl = board.current("cost_per_lead", start, **dims)
        to_mql = board.current("conversion_rate", start, from_stage="lead", to_stage="mql", **dims)
        to_sal = board.current("conversion_rate", start, from_stage="mql", to_stage="sal", **dims)
        ttc = board.current("time_to_conversion", start, from_stage="lead", to_stage="mql", **dims)
        table.add_row(channel or "[b]all traffic[/b]",
                      _fmt(cpl["denominator"] if cpl else None, "count"),
                      _fmt(cpl["numerator"] if cpl else None, "money"),
                      _fmt(cpl["value"] if cpl else None, "money"),
                      _fmt(to_mql["value"] if to_mql else None, "pct"),
                      _fmt(to_sal["value"] if to_sal else None, "pct"),
                      _fmt(ttc["value"] if ttc else None, "duration"))
    more = Table(title="Cost, quality, revenue, traffic and attribution (same hour)")
    for column in ("channel", "visitors", "cost/MQL", "CAC", "win rate", "pipeline", "ROAS",
                   "leads credited (linear)"):
        more.add_column(column, justify="left" if column == "channel" else "right")
    for channel in [*channels, None]:
        dims = {} if channel is None else {"channel": channel}
        visitors = board.current("visitors", start, **dims)
        per_mql = board.current("cost_per_mql", start, **dims)
        cac = board.current("cost_per_acquisition", start, **dims)
        win = board.current("win_rate", start, **dims)
        pipeline = board.current("pipeline", start, **dims)
        roas = board.current("roas", start, **dims)
        credited = board.current("attributed_leads", start, model="linear", **dims)
        more.add_row(channel or "[b]all traffic[/b]",
                     _fmt(visitors["value"] if visitors else None, "count"),
                     _fmt(per_mql["value"] if per_mql else None, "money"),
                     _fmt(cac["value"] if cac else None, "money"),
                     _fmt(win["value"] if win else None, "pct"),
                     _fmt(pipeline["value"] if pipeline else None, "money"),
                     _fmt(roas["value"] if roas else None, "ratio"),
                     _fmt(credited["value"] if credited else None, "ratio"))
    month = calendar.format(calendar.start(now, MONTH))
    to_date = Table(title=f"Month to date, from {month} ({settings.timezone})",
                    caption="" if MONTH in settings.window_sizes else "add 1mo to KPI_WINDOW_SIZES to see it")
    for column in ("channel", "leads", "spend", "cost per lead", "lead→MQL", "pipeline"):
        to_date.add_column(column, justify="left" if column == "channel" else "right")
    for channel in [*channels, None]:
        dims = {} if channel is None else {"channel": channel}
        cpl = board.current("cost_per_lead", month, "1mo", **dims)
        to_mql = board.current("conversion_rate", month, "1mo", from_stage="lead", to_stage="mql", **dims)
        pipeline = board.current("pipeline", month, "1mo", **dims)
        to_date.add_row(channel or "[b]all traffic[/b]",
                        _fmt(cpl["denominator"] if cpl else None, "count"),
                        _fmt(cpl["numerator"] if cpl else None, "money"),
                        _fmt(cpl["value"] if cpl else None, "money"),
                        _fmt(to_mql["value"] if to_mql else None, "pct"),
                        _fmt(pipeline["value"] if pipeline else None, "money"))
    return Group(header, *(f"[red]{problem}" for problem in list(feed.problems)), table, more, to_date)


@contextmanager
def _worker(settings_env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        # Its own session: Ctrl-C reaches the demo only, which then stops the worker cleanly (SIGTERM).
        process = subprocess.Popen([sys.executable, "-m", "stream", "worker"],  # noqa: S603
                                   env={**os.environ, **settings_env}, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_process(process, timeout_s=30)


def _options(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kpi-stream demo", description="Live KPIs on synthetic traffic.")
    parser.add_argument("--rate", type=float, default=300.0, help="synthetic events per second (default 300)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="traffic seed")
    return parser.parse_args(args)


def _cluster(stack: ExitStack, settings: Settings, workdir: Path, console: Console) -> tuple[Settings, dict[str, str]]:
    """The settings and worker environment of the demo's cluster: the configured one, or an embedded broker
    started for the demo (stopped with ``stack``)."""
    env = {var: os.environ[var] for var, _, _ in ENVIRONMENT.values() if var in os.environ}
    if not settings.bootstrap_servers:
        broker = EmbeddedBroker(workdir / "broker.log")
        console.print(f"starting the embedded broker (Tansu) on {broker.bootstrap_servers} ...")
        # Before it starts: it runs in its own session, so a Ctrl-C while it starts reaches only the demo.
        stack.callback(broker.stop)
        broker.start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        env.update(broker.worker_env)
        env.setdefault("KPI_APP_ID", f"kpi-demo-{int(time.time())}")
    env.setdefault("KPI_EXCHANGE_RATES", DEMO_RATES)
    env.setdefault("KPI_WINDOW_SIZES", "1h,1d,1mo")  # the view shows the month to date beside the hour
    env["KPI_WEB_PORT"] = str(int(env.get("KPI_WEB_PORT", "0")) or free_port())
    # The settings the worker runs with: the demo's own clients (the traffic producer idempotent where the broker
    # accepts it, as the worker's is) read the same.
    settings = Settings.from_env({**os.environ, **env})
    return settings, env


def run_demo(args: list[str], settings: Settings) -> int:
    """Run the whole thing until Ctrl-C (or ``--duration`` seconds); 1 when the worker exits on its own.

    However it ends, what it started is stopped, in the reverse order: the threads joined (each closes its own
    client while the broker is still there), then the worker, then the embedded broker.
    """
    options = _options(args)
    # Ctrl-C stops everything even when started from a shell that ignores SIGINT for its background jobs
    # (Python then installs no handler of its own, and the demo would run on).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="kpi-demo-"))
    feed = Feed()
    try:
        with ExitStack() as stack:
            status = _run(stack, options, settings, console, workdir, feed)
    except KeyboardInterrupt:
        # Ctrl-C before the live view (the broker starting, the topics being made), or again while stopping: the
        # stack has stopped what had started.
        status = 0
    for problem in feed.problems:
        console.print(f"[red]{problem}")
    console.print(f"stopped; logs in {workdir}")
    return status


def _run(stack: ExitStack, options: argparse.Namespace, settings: Settings, console: Console, workdir: Path,
         feed: Feed) -> int:
    """Start the broker, topics, worker and threads (each stopped with ``stack``), then show the live view until
    Ctrl-C, ``--duration`` or the worker's exit."""
    settings, env = _cluster(stack, settings, workdir, console)
    port = int(env["KPI_WEB_PORT"])
    ensure_topics(settings)
    console.print(f"worker log: {workdir / 'worker.log'}")
    worker = stack.enter_context(_worker(env, workdir / "worker.log"))
    stop_traffic = stack.enter_context(_background(settings, options, feed))
    console.print(f"metrics: http://127.0.0.1:{port}/metrics  (Ctrl-C stops everything)")
    started = time.time()
    with Live(_view(settings, feed, port, started), console=console, refresh_per_second=2) as live:
        try:
            while options.duration is None or time.time() - started < options.duration:
                if worker.poll() is not None:
                    console.print(f"[red]the worker exited ({worker.returncode}); see {workdir / 'worker.log'}")
                    return 1
                time.sleep(1)
                live.update(_view(settings, feed, port, started))
        except KeyboardInterrupt:
            pass
        # The traffic stops first, and the view shows every KPI's last record (the hour and the month agree) before
        # everything else stops; Ctrl-C again skips the wait.
        stop_traffic.set()
        settle = _settle_seconds(settings)
        console.print(f"stopping: the traffic stopped, the last KPI records come in ({settle:.0f} s; Ctrl-C again "
                      "skips this) ...")
        deadline = time.time() + settle
        try:
            while time.time() < deadline:
                time.sleep(min(1.0, max(deadline - time.time(), 0.0)))
                live.update(_view(settings, feed, port, started))
        except KeyboardInterrupt:
            pass
    console.print("stopping ...")
    return 0
