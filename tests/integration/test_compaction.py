"""Compaction on Apache Kafka: compacted KPI topics keep the current record of every key, and a worker restores
exact tables from changelogs the log cleaner has compacted.

Tansu has no log cleaner, so these tests always run on a broker of their own, Apache Kafka with the cleaner set
to work at once: segments roll every 300 ms, any dirty share is worth cleaning, and the cleaner looks every
200 ms. Every compacted topic of the test is then cleaned within seconds of being written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from stream.brokers.apache_kafka import ApacheKafka
from stream.core.kpis import FAMILIES
from stream.kafka.clients import MAX_REQUEST_BYTES
from tests.eventset import mixed
from tests.integration.harness import INPUTS, Names, produce, read_records, start_worker
from tests.integration.outcome import as_input, assert_final_kpis_exact, beats, wait_for_watermark

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGGRESSIVE_CLEANER = {
    "log.roll.ms": "300",
    "log.cleaner.min.cleanable.ratio": "0.01",
    "log.cleaner.backoff.ms": "200",
    "log.cleaner.min.compaction.lag.ms": "0",
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
}


@pytest.fixture(scope="module")
def compacting_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    broker = ApacheKafka(log_path=tmp_path_factory.mktemp("compacting-kafka") / "kafka.log",
                         properties=AGGRESSIVE_CLEANER)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def topic_configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic) for topic in topics])
    return {resource.name: {name: entry.value for name, entry in future.result().items()}
            for resource, future in futures.items()}


def changelogs(bootstrap: str, names: Names) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return sorted(topic for topic in admin.list_topics(timeout=10).topics
                  if topic.startswith(names.app_id) and topic.endswith("-changelog"))


def end_offsets(bootstrap: str, topics: list[str]) -> int:
    """The sum of the end offsets of every partition of the topics: the records ever written to them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        total = 0
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                total += consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        return total
    finally:
        consumer.close()


def wait_compacted(bootstrap: str, topics: list[str], timeout_s: float = 60.0) -> tuple[int, int]:
    """Wait until the log cleaner removed records from the topics: (records left, records written)."""
    written = end_offsets(bootstrap, topics)
    deadline = time.monotonic() + timeout_s
    while True:
        left = len(read_records(bootstrap, topics, idle_s=1.0))
        if left < written:
            return left, written
        assert time.monotonic() < deadline, f"nothing of {written} records compacted away in {timeout_s} s"
        time.sleep(1)


def test_topics_are_created_compacted_where_the_last_record_per_key_is_the_truth(
        compacting_kafka: ApacheKafka, names: Names, tmp_path: Path) -> None:
    bootstrap = compacting_kafka.bootstrap_servers
    worker = start_worker(names, bootstrap, tmp_path)
    worker.stop()
    kpi_topics = [names.topic(f"kpi-{family}") for family in FAMILIES]
    configs = topic_configs(bootstrap, [*kpi_topics, names.topic("dead-letters"), *(names.topic(t) for t in INPUTS),
                                        *changelogs(bootstrap, names)])
    for topic in kpi_topics:
        assert configs[topic]["cleanup.policy"] == "compact", topic
    assert len(changelogs(bootstrap, names)) == 2
    for topic in changelogs(bootstrap, names):
        assert configs[topic]["cleanup.policy"] == "compact", topic
    assert configs[names.topic("dead-letters")]["cleanup.policy"] == "delete"
    assert configs[names.topic("dead-letters")]["max.message.bytes"] == str(MAX_REQUEST_BYTES)
    for topic in INPUTS:  # inputs are the producers': created only when missing, and never compacted
        assert configs[names.topic(topic)]["cleanup.policy"] == "delete"


def test_compacted_kpi_topics_and_changelogs_give_exact_kpis_and_an_exact_restore(
        compacting_kafka: ApacheKafka, names: Names, tmp_path: Path) -> None:
    """Half the input, a stop, compaction of every changelog and KPI topic, a new worker restoring from them, the
    other half: a reader of the compacted KPI topics from the start ends with the exact current record per key."""
    bootstrap = compacting_kafka.bootstrap_servers
    messages, _ = mixed(seed=47)
    payload = as_input(names, messages, seed=13)
    sent_beats = beats(names)
    half = len(payload) // 2
    first = start_worker(names, bootstrap, tmp_path, label="first", KPI_BATCH_MAX="20")
    try:
        produce(bootstrap, payload[:half])
        first.wait_until(lambda: first.accounted() >= half, what="the first half accounted")
        first.wait_quiet("leadgen_kpi_records_total", quiet_s=2)
    finally:
        assert first.stop() == 0, first.log_tail()
    # Roll the active segments (a record after log.roll.ms), so the cleaner may take what the first worker wrote.
    time.sleep(0.5)
    kpi_topics = [names.topic(f"kpi-{family}") for family in FAMILIES]
    logs = changelogs(bootstrap, names)
    changelog_left, changelog_written = wait_compacted(bootstrap, logs)
    second = start_worker(names, bootstrap, tmp_path, label="second")
    try:
        produce(bootstrap, payload[half:])
        produce(bootstrap, sent_beats)
        wait_for_watermark(second)
        assert not second.errors(), second.errors()
    finally:
        assert second.stop() == 0, second.log_tail()
    kpi_left, kpi_written = wait_compacted(bootstrap, kpi_topics)
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats, restarted=True)
    print(f"\ncompaction: changelogs kept {changelog_left} of {changelog_written} records before the restore; "
          f"KPI topics kept {kpi_left} of {kpi_written}")
