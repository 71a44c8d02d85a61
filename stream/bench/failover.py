"""The failover of two workers with standbys: one killed, the survivor taking over its partitions."""

from __future__ import annotations

import time
from collections.abc import Sequence

from stream.bench.errors import BenchError
from stream.bench.latency import ProbeLog, ProbeReader, probe_event
from stream.bench.processes import ManagedProcess
from stream.bench.progress import Progress
from stream.bench.recovery_log import log_size, read_log, recovery_records
from stream.bench.results import FailoverResult
from stream.bench.timing import FAILOVER_TIMEOUT_S, READY_POLL_S
from stream.bench.watch import fetch_metrics
from stream.settings import Settings

CHANGELOG_SUFFIX = "-changelog"  # Faust's changelog topics are <app id>-<table>-changelog
PROBES_PER_PARTITION = 2  # probe leads sent to each partition of the leads topic at the kill
FIRST_PROBE = 1_000_000  # probe numbers from here: apart from the latency phase's, should a topic be shared


def changelog_records(settings: Settings, app_id: str, timeout_s: float = 15.0) -> int | None:
    """The records of the app's changelog topics (``<app id>-<table>-changelog``): the sum of their end offsets.

    With two workers and one standby replica, each changelog partition is read by the one worker that is not its
    owner, so this is what the standbys read between them. None when the cluster cannot tell.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from stream.kafka.clients import confluent_config

    consumer = Consumer({**confluent_config(settings), "group.id": f"{app_id}-changelog-count",
                         "enable.auto.commit": False})
    try:
        topics = consumer.list_topics(timeout=timeout_s).topics
        total = 0
        for name, metadata in topics.items():
            if name.startswith(f"{app_id}-") and name.endswith(CHANGELOG_SUFFIX):
                for partition in metadata.partitions:
                    total += consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=timeout_s)[1]
    except KafkaException:
        return None
    finally:
        consumer.close()
    return total


def send_probes(settings: Settings, partitions: int, probes: ProbeLog) -> None:
    """Probe leads to every partition of the leads topic, each with a lead id and campaign of its own (so their
    entity and cell partitions spread too); waits until they are delivered.

    Raises:
        BenchError: when a probe is not delivered.
    """
    from confluent_kafka import Producer

    from stream.core.events import Kind
    from stream.kafka.clients import confluent_config

    producer = Producer({**confluent_config(settings), "linger.ms": 1})
    topic, now_ms = settings.input_topics[Kind.LEAD], int(time.time() * 1000)
    for index in range(partitions * PROBES_PER_PARTITION):
        number = FIRST_PROBE + index
        probes.record_sent(number, time.monotonic())
        producer.produce(topic, probe_event(number, now_ms), partition=index % partitions)
    if producer.flush(30):
        raise BenchError("failover: the probe leads were not delivered")


def stream_partitions(page: str) -> int:
    """``leadgen_assigned_partitions`` of a ``/metrics`` page over every topic but the changelogs (of which each
    worker is assigned every partition, as the owner or as the standby)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(int(sample.value) for family in text_string_to_metric_families(page) for sample in family.samples
               if sample.name == "leadgen_assigned_partitions"
               and not sample.labels.get("topic", "").endswith(CHANGELOG_SUFFIX))


def assigned_partitions(port: int) -> int | None:
    """The worker's assigned partitions but the changelogs' (None when it does not answer)."""
    page = fetch_metrics(port)
    return None if page is None else stream_partitions(page)


def measure_failover(settings: Settings, workers: Sequence[ManagedProcess], ports: Sequence[int],
                     progress: Progress) -> FailoverResult:
    """SIGKILL the second of two running workers; time until the first processes every partition (see the
    package docstring).

    Raises:
        BenchError: when the survivor exits, or the workers' partitions cannot be read before the kill.
    """
    from stream.core.events import Kind
    from stream.core.kpis import FAMILY_COST_PER_LEAD
    from stream.kafka.clients import ensure_topics

    survivor, victim = workers
    survivor_port = ports[0]
    before = [assigned_partitions(port) for port in ports]
    if None in before:
        raise BenchError("failover: a worker did not answer before the kill")
    partitions = ensure_topics(settings)  # they exist: this reads their partition counts
    kpi_topic = settings.kpi_topic(FAMILY_COST_PER_LEAD)
    probes = ProbeLog()
    reader = ProbeReader(settings, kpi_topic, partitions[kpi_topic], probes, from_end=True)
    reader.start()
    try:
        if not reader.assigned.wait(30):
            raise BenchError(f"failover: the probe reader was not assigned: {reader.error}")
        log_start = log_size(survivor.log_path)
        victim.kill()
        assert victim.signalled_at is not None  # kill() notes it
        killed_at = victim.signalled_at
        progress.show("failover: SIGKILL sent to worker 2 of 2; sending probe leads", force=True)
        send_probes(settings, partitions[settings.input_topics[Kind.LEAD]], probes)
        expected = sum(count for count in before if count is not None)
        owned, owned_at = 0, None
        while time.monotonic() < killed_at + FAILOVER_TIMEOUT_S:
            survivor.check()
            owned = assigned_partitions(survivor_port) or owned
            if owned_at is None and owned == expected:
                owned_at = time.monotonic()
            if owned_at is not None and len(probes.seen) == len(probes.sent):
                break
            if reader.error is not None:
                raise BenchError(f"failover: the probe reader failed: {reader.error}")
            progress.show(f"failover: survivor owns {owned}/{expected} partitions; "
                          f"{len(probes.seen)}/{len(probes.sent)} probes seen")
            time.sleep(READY_POLL_S)
    finally:
        reader.stop()
    last_probe_at = max(probes.seen.values()) if len(probes.seen) == len(probes.sent) else None
    result = FailoverResult(
        failover_s=None if owned_at is None or last_probe_at is None else max(owned_at, last_probe_at) - killed_at,
        partitions_s=None if owned_at is None else owned_at - killed_at,
        probes_s=None if last_probe_at is None else last_probe_at - killed_at,
        partitions_before=expected, partitions_after=owned, probes_sent=len(probes.sent),
        probes_seen=len(probes.seen), changelog_records=recovery_records(read_log(survivor.log_path, log_start)))
    progress.show("failover: " + ("not complete" if result.failover_s is None else f"{result.failover_s:.2f} s")
                  + f" (survivor's recovery read {result.changelog_records} changelog records)", force=True)
    return result
