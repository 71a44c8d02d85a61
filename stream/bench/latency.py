"""The latency phase: live traffic with probe leads, and when each probe's KPI record is read."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stream.bench.errors import BenchError
from stream.bench.options import BenchOptions
from stream.bench.processes import ManagedProcess, worker_argv
from stream.bench.progress import Progress
from stream.bench.results import LatencyResult, Rate
from stream.bench.run_settings import bench_settings, settings_env
from stream.bench.timing import LATENCY_WARMUP_S, POLL_S, PROBE_GRACE_S, PROBE_INTERVAL_S
from stream.bench.watch import wait_ready
from stream.core.quantiles import nearest_rank
from stream.settings import Settings

PROBE_CAMPAIGN = "probe-"  # probe n's campaign is probe-<n>; no generated event has such a campaign
PROBE_CHANNEL = "paid_search"  # a channel the traffic model has, so /metrics gets no extra channel label
COST_PER_LEAD = "cost_per_lead"  # the KPI whose records count a probe's lead (its denominator)


@dataclass
class ProbeLog:
    """When each probe was handed to the producer and when its first KPI record was read (``time.monotonic``)."""

    sent: dict[int, float] = field(default_factory=dict)
    seen: dict[int, float] = field(default_factory=dict)
    wrong_leads: dict[int, object] = field(default_factory=dict)  # probe -> the first lead count other than 1

    def record_sent(self, number: int, at: float) -> None:
        """Probe ``number`` was handed to the producer at ``at``."""
        self.sent[number] = at

    def record_seen(self, number: int, at: float) -> None:
        """A KPI record of probe ``number`` was read at ``at``; only its first one counts."""
        if number in self.sent:
            self.seen.setdefault(number, at)

    def record_leads(self, number: int, leads: object) -> None:
        """A cost-per-lead record of probe ``number`` counts ``leads`` leads; a probe is one lead, so 1 is right."""
        if number in self.sent and leads != 1:
            self.wrong_leads.setdefault(number, leads)

    def miscounted(self) -> list[int]:
        """The probes with a cost-per-lead record counting other than exactly one lead."""
        return sorted(self.wrong_leads)

    def latencies_us(self) -> list[int]:
        """Latency of every probe seen, in microseconds, sorted."""
        return sorted(round((self.seen[number] - self.sent[number]) * 1_000_000) for number in self.seen)

    def waited_until_us(self, moment: float) -> list[int]:
        """How long each probe sent before ``moment`` had waited by then at most, in microseconds, sorted.

        A probe seen before ``moment`` waited its latency; one not seen by then, ``moment`` minus its send.
        """
        return sorted(round((min(self.seen.get(number, math.inf), moment) - sent) * 1_000_000)
                      for number, sent in self.sent.items() if sent < moment)

    def missing(self) -> list[int]:
        """The probes sent but not seen."""
        return sorted(number for number in self.sent if number not in self.seen)


def percentiles_ms(latencies_us: list[int], fractions: Sequence[float]) -> list[float | None]:
    """Nearest-rank percentiles, in milliseconds, of sorted microsecond latencies (None for none)."""
    found = [nearest_rank(latencies_us, fraction) for fraction in fractions]
    return [None if value is None else value / 1000 for value in found]


def probe_event(number: int, now_ms: int) -> bytes:
    """Probe ``number``: a valid lead whose campaign no other event has."""
    return orjson.dumps({"event_id": f"{PROBE_CAMPAIGN}{number}", "ts": now_ms, "lead_id": f"probe-lead-{number}",
                         "channel": PROBE_CHANNEL, "campaign": f"{PROBE_CAMPAIGN}{number}"})


@dataclass(frozen=True)
class ProbeRecord:
    """What a KPI record says of a probe: its number, the KPI, and the leads it counts (``denominator``)."""

    number: int
    kpi: object
    leads: object


def probe_record(value: bytes | None) -> ProbeRecord | None:
    """The probe a KPI record is about (its dimensions hold a probe's campaign), else None."""
    if not value or PROBE_CAMPAIGN.encode() not in value:  # most records are not a probe's: skip their parsing
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    dimensions = record.get("dimensions")
    campaign = dimensions.get("campaign") if isinstance(dimensions, dict) else None
    if not isinstance(campaign, str) or not campaign.startswith(PROBE_CAMPAIGN):
        return None
    number = campaign[len(PROBE_CAMPAIGN):]
    if not (number.isascii() and number.isdigit()):
        return None
    return ProbeRecord(int(number), record.get("kpi"), record.get("denominator"))


def probe_in_record(value: bytes | None) -> int | None:
    """The probe number of a KPI record whose dimensions hold a probe's campaign, else None."""
    found = probe_record(value)
    return None if found is None else found.number


class ProbeReader(threading.Thread):
    """Reads a KPI topic from its beginning (or, ``from_end``, from its end) and notes when each probe's first
    record arrives.

    It is assigned every partition rather than subscribed, so no group join delays its first read; ``assigned``
    is set once it is.
    """

    def __init__(self, settings: Settings, topic: str, partitions: int, probes: ProbeLog,
                 from_end: bool = False) -> None:
        super().__init__(name="probe-reader", daemon=True)
        self._settings, self._topic, self._partitions, self._probes = settings, topic, partitions, probes
        self._from_end = from_end
        self._stopping = threading.Event()
        self.assigned = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        """Poll until stopped; a Kafka error ends it and is kept in ``error``."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        from stream.kafka.clients import confluent_config

        # A short fetch wait: the broker may hold a fetch that long, which would add to every probe's latency.
        consumer = Consumer({**confluent_config(self._settings), "group.id": f"{self._topic}-probe-reader",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        try:
            # The end offsets read here, not OFFSET_END, which would be resolved at some later fetch.
            consumer.assign([TopicPartition(self._topic, partition,
                                            consumer.get_watermark_offsets(TopicPartition(self._topic, partition))[1]
                                            if self._from_end else OFFSET_BEGINNING)
                             for partition in range(self._partitions)])
            self.assigned.set()
            while not self._stopping.is_set():
                message = consumer.poll(0.05)  # poll returns as soon as a message is there, unlike consume
                arrived = time.monotonic()
                if message is None or message.error():
                    continue
                found = probe_record(message.value())
                if found is not None:
                    self._probes.record_seen(found.number, arrived)
                    if found.kpi == COST_PER_LEAD:
                        self._probes.record_leads(found.number, found.leads)
        except KafkaException as exc:
            self.error = str(exc)
        finally:
            consumer.close()

    def stop(self) -> None:
        """Ask it to stop and wait for it."""
        self._stopping.set()
        self.join(timeout=10)


def send_live_traffic(settings: Settings, rate: int, seed: int, probes: ProbeLog, probe_seconds: float,
                      on_probe: Callable[[], None], stop: threading.Event | None = None) -> Rate:
    """Live events at ``rate``/s for the warm-up and ``probe_seconds`` (or until ``stop``), with a probe every
    100 ms after the warm-up; ``on_probe`` is called after each probe.

    Returns the live events sent (probes not counted) over the time they were sent.
    """
    from stream.core.events import Kind
    from stream.kafka.clients import producer_config
    from stream.kafka.produce import BatchProducer
    from stream.tools.generator import TrafficModel

    def now_ms() -> int:
        return int(time.time() * 1000)

    # time_scale as in the demo: funnel delays shrink so that stage changes come within the phase.
    model = TrafficModel(seed=seed, start_ms=now_ms(), time_scale=20.0, clock_ms=now_ms)
    events = model.events()
    # A short linger: a probe waiting in the producer's batch for 20 ms (the backlog producer's linger) would
    # count as pipeline latency. Undelivered messages raise ProduceError, which the bench reports.
    producer = BatchProducer(producer_config(settings), linger_ms=1)
    leads_topic = settings.input_topics[Kind.LEAD]
    started = time.monotonic()
    next_probe_at = started + LATENCY_WARMUP_S
    end = next_probe_at + probe_seconds
    sent = probe_number = 0
    while (now := time.monotonic()) < end and not (stop is not None and stop.is_set()):
        if now >= next_probe_at:
            probes.record_sent(probe_number, time.monotonic())  # before the send: the reader may be quick
            producer.send(leads_topic, probe_event(probe_number, now_ms()))
            probe_number += 1
            next_probe_at += PROBE_INTERVAL_S
            on_probe()
            continue
        due = started + sent / rate
        if now >= due:
            kind, payload = next(events)
            producer.send(settings.input_topics[kind], payload)
            sent += 1
            continue
        # The next event is at most 1/rate away, so a stop is noticed soon even when the end is infinitely far.
        time.sleep(min(due, next_probe_at, end) - now)
    seconds = time.monotonic() - started
    producer.flush()
    return Rate(sent, seconds)


def await_probes(probes: ProbeLog, reader: ProbeReader, grace_s: float, check: Callable[[], None],
                 progress: Progress, label: str) -> None:
    """Wait until every probe sent was seen, or ``grace_s`` after the last was sent, or the reader stopped."""
    last_sent = max(probes.sent.values(), default=time.monotonic())
    while len(probes.seen) < len(probes.sent) and time.monotonic() < last_sent + grace_s:
        check()
        if reader.error is not None or not reader.is_alive():
            break
        progress.show(f"{label}: {len(probes.seen)}/{len(probes.sent)} probes seen")
        time.sleep(POLL_S)


def measure_latency(cluster: Settings, run_id: str, options: BenchOptions, work_dir: Path,
                    progress: Progress) -> LatencyResult:
    """A worker on new topics fed live events with probes; how long until each probe's KPI record is read.

    Raises:
        BenchError: when the worker exits or does not start, or the probe reader fails.
    """
    from stream.brokers.embedded import free_port
    from stream.core.kpis import FAMILY_COST_PER_LEAD
    from stream.kafka.clients import ensure_topics

    live = bench_settings(cluster, f"{run_id}-latency")
    partitions = ensure_topics(live)
    kpi_topic = live.kpi_topic(FAMILY_COST_PER_LEAD)  # a record per channel and campaign: one per probe
    port = free_port()
    data_dir = work_dir / "latency-data"
    data_dir.mkdir(exist_ok=True)
    probes = ProbeLog()
    with ManagedProcess("latency worker", worker_argv(), settings_env(live, port, data_dir),
                        work_dir / "latency-worker.log", work_dir) as worker:
        wait_ready([worker], [port], "latency", progress, with_partitions=True)
        reader = ProbeReader(live, kpi_topic, partitions[kpi_topic], probes)
        reader.start()
        try:
            progress.show(f"latency: worker ready; {LATENCY_WARMUP_S:.0f} s of warm-up, then probes for "
                          f"{options.latency_seconds:g} s", force=True)

            def on_probe() -> None:
                worker.check()
                progress.show(f"latency: {len(probes.sent)} probes sent, {len(probes.seen)} seen")

            cpu_before, began = worker.cpu_seconds(), time.monotonic()
            traffic = send_live_traffic(live, options.latency_rate, options.seed, probes, options.latency_seconds,
                                        on_probe)
            cpu_after, ended = worker.cpu_seconds(), time.monotonic()
            await_probes(probes, reader, PROBE_GRACE_S, worker.check, progress, "latency")
        finally:
            reader.stop()
        if reader.error is not None:
            raise BenchError(f"latency: the probe reader failed: {reader.error}")
    p50, p99 = percentiles_ms(probes.latencies_us(), (0.5, 0.99))
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    result = LatencyResult(p50, p99, len(probes.sent), len(probes.seen), traffic,
                           cpu_utilisation=None if cpu is None else cpu / (ended - began),
                           cpu_us_per_event=None if cpu is None or not traffic.events else 1e6 * cpu / traffic.events)
    progress.show(f"latency: {result.probes_seen}/{result.probes_sent} probes seen", force=True)
    return result
