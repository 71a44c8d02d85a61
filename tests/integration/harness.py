"""Running the real worker against the real broker: processes, producing, reading topics, scraping /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from stream.brokers.embedded import EmbeddedBroker, free_port

INPUTS = ("page-views", "leads", "stage-changes", "spend")
ACCOUNTING_COUNTERS = ("leadgen_events_total", "leadgen_events_duplicate_total", "leadgen_events_rejected_total")


@dataclass
class Names:
    """A test's own app id and topics, so tests never share data on the shared broker."""

    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    @property
    def app_id(self) -> str:
        return f"{self.prefix}-app"

    def topic(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def env(self, bootstrap: str, web_port: int, **extra: str) -> dict[str, str]:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KPI_APP_ID": self.app_id, "KPI_WEB_PORT": str(web_port),
            "KPI_TOPIC_PAGE_VIEWS": self.topic("page-views"), "KPI_TOPIC_LEADS": self.topic("leads"),
            "KPI_TOPIC_STAGE_CHANGES": self.topic("stage-changes"), "KPI_TOPIC_SPEND": self.topic("spend"),
            "KPI_TOPIC_DEAD_LETTERS": self.topic("dead-letters"), "KPI_TOPIC_PREFIX": f"{self.prefix}-kpi-",
            "KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "4", "KPI_LOG_LEVEL": "info",
        }
        env.update(extra)
        return env


class Worker:
    """``kpi-stream worker`` as a child process, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = int(env["KPI_WEB_PORT"])
        self.host = env.get("KPI_WEB_HOST", "127.0.0.1")
        self.log_path = log_path
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=full_env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(self.metrics_text()) for s in family.samples}

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.host}:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()

    def total(self, name: str) -> float:
        """Sum of a metric over all its labels (0 while unknown)."""
        try:
            samples = self.metrics()
        except OSError:
            return 0.0
        return sum(value for (sample, _), value in samples.items() if sample == name)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.total("leadgen_worker_ready") == 1:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.log_tail()}")

    def accounted(self) -> float:
        """Input messages in the three counters every message ends in exactly one of."""
        return sum(self.total(name) for name in ACCOUNTING_COUNTERS)

    def wait_until(self, predicate: object, timeout_s: float = 120.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{self.progress()}\n{self.log_tail()}")

    def progress(self) -> str:
        """The worker's watermarks, consumer lag and assigned partitions from /metrics, one sample a line: what
        a stalled wait needs beside the log (which a worker that is waiting, not failing, leaves quiet)."""
        try:
            samples = self.metrics()
        except OSError as exc:
            return f"/metrics unanswered: {exc}"
        shown = ("leadgen_watermark_timestamp_seconds", "leadgen_consumer_lag_messages", "leadgen_assigned_partitions")
        return "\n".join(f"{name}{dict(labels)} = {value}" for (name, labels), value in sorted(samples.items())
                         if name in shown)

    def wait_quiet(self, name: str, quiet_s: float = 2.0, timeout_s: float = 60.0) -> None:
        """Wait until a metric stops changing for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            value = self.total(name)
            if value != last:
                last, since = value, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} kept changing for {timeout_s} s")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def errors(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "Traceback" in line or "[ERROR]" in line]


def run_to_exit(env: dict[str, str], log_path: Path, timeout_s: float = 90) -> tuple[int, float, str]:
    """Start a worker that is to fail: (its exit status, seconds from start to exit, its whole log)."""
    started = time.monotonic()
    worker = Worker(env, log_path)
    try:
        code = worker.process.wait(timeout=timeout_s)
    finally:
        worker.stop()
    return code, time.monotonic() - started, log_path.read_text(errors="replace")


def start_worker(names: Names, bootstrap: str, tmp_path: Path, label: str = "worker", **extra: str) -> Worker:
    """Start a worker and wait until it is ready. Its tables' local files go to ``<tmp_path>/data-<label>``
    unless ``KPI_DATA_DIR`` is given: a worker started again with the same label reuses them."""
    extra.setdefault("KPI_DATA_DIR", str(tmp_path / f"data-{label}"))
    worker = Worker(names.env(bootstrap, free_port(), **extra), tmp_path / f"{label}.log")
    worker.wait_ready()
    return worker


Broker = str | dict[str, str]  # bootstrap servers, or a whole librdkafka client config (TLS)


def client_config(broker: Broker) -> dict[str, str]:
    return {"bootstrap.servers": broker} if isinstance(broker, str) else dict(broker)


PARTITIONS = 4  # of every topic a test makes (KPI_PARTITIONS in Names.env)


def create_topics(bootstrap: Broker, topics: Iterable[str], partitions: int = PARTITIONS,
                  config: dict[str, str] | None = None) -> str:
    """Create the topics that do not exist yet, as an operator would before sending to them; the cluster's id.

    Apache Kafka creates a topic a producer names with ``num.partitions`` (1 here), so a message sent to
    partition 3 of a topic nobody created is refused; Tansu created it with enough partitions.
    """
    admin = AdminClient(client_config(bootstrap))
    metadata = admin.list_topics(timeout=10)
    existing = metadata.topics
    missing = [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
               for topic in sorted(set(topics)) if topic not in existing]
    for topic, future in (admin.create_topics(missing, request_timeout=15).items() if missing else ()):
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise AssertionError(f"cannot create {topic}: {exc}") from exc
    return str(metadata.cluster_id)


def producer_config(bootstrap: Broker, cluster_id: str | None = None) -> dict[str, str | int | bool]:
    """A test producer's settings: idempotent, or one request in flight on Tansu, which refuses idempotence
    (told by the cluster's id, asked for unless given).

    With librdkafka's defaults (not idempotent, up to a million requests in flight, retries without limit) a
    batch retried after a broker stall lands after a later one, or twice: input reordered into late events, or a
    bad message dead-lettered from two offsets, made by the test and not by the worker.
    """
    if cluster_id is None:
        cluster_id = str(AdminClient(client_config(bootstrap)).list_topics(timeout=10).cluster_id)
    if cluster_id == EmbeddedBroker.cluster_id:
        return {**client_config(bootstrap), "linger.ms": 5, "max.in.flight.requests.per.connection": 1}
    return {**client_config(bootstrap), "linger.ms": 5, "enable.idempotence": True}


def produce(bootstrap: Broker, messages: Iterable[tuple[str, int | None, bytes]]) -> int:
    """Send (topic, partition or None, value) messages and wait for delivery; returns how many."""
    messages = list(messages)
    cluster_id = create_topics(bootstrap, (topic for topic, _, _ in messages))
    producer = Producer(producer_config(bootstrap, cluster_id))
    failures: list[str] = []
    count = 0
    for topic, partition, value in messages:
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, on_delivery=lambda err, _: err and failures.append(str(err)), **kwargs)
        count += 1
        producer.poll(0)
    assert producer.flush(30) == 0, "undelivered messages"
    assert not failures, failures
    return count


def read_topic(bootstrap: Broker, topic: str, idle_s: float = 2.0, timeout_s: float = 60.0
               ) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of a topic from the start, until nothing new arrives for ``idle_s``."""
    return read_topics(bootstrap, [topic], idle_s, timeout_s)[topic]


def read_topics(bootstrap: Broker, topics: list[str], idle_s: float = 2.0, timeout_s: float = 60.0
                ) -> dict[str, list[tuple[bytes | None, bytes | None]]]:
    """Every record of several topics from the start, per topic in partition order, until nothing new arrives
    from any of them for ``idle_s`` (one wait for all, not one per topic)."""
    records: dict[str, list[tuple[bytes | None, bytes | None]]] = {topic: [] for topic in topics}
    for topic, _, _, key, value in read_records(bootstrap, topics, idle_s, timeout_s):
        records[topic].append((key, value))
    return records


def read_records(bootstrap: Broker, topics: list[str], idle_s: float = 2.0, timeout_s: float = 60.0
                 ) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    """(topic, partition, offset, key, value) of every record of several topics, as :func:`read_topics` reads them.

    Partitions are assigned directly rather than through a consumer group: there
    is nothing to coordinate, and group joins are slow on the embedded broker.
    """
    consumer = Consumer({**client_config(bootstrap), "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    assignment = []
    for topic in topics:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    consumer.assign(assignment)
    records: list[tuple[str, int, int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last < idle_s:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            records.append((message.topic(), message.partition(), message.offset(), message.key(), message.value()))
            last = time.monotonic()
    finally:
        consumer.close()
    return records


def assert_input_as_sent(bootstrap: Broker, messages: list[tuple[str, int, bytes]]) -> None:
    """Each input partition holds exactly the messages sent to it, once each and in the order they were sent.

    What a producer can get wrong after a broker stall: a retried batch written after a later one (events
    reordered, so some come late) or twice (a message at two offsets). Checked so that such input is named as
    the test's own doing, not the worker's.
    """
    sent: dict[tuple[str, int], list[bytes]] = {}
    for topic, partition, value in messages:
        sent.setdefault((topic, partition), []).append(value)
    stored: dict[tuple[str, int], list[tuple[int, bytes]]] = {key: [] for key in sent}
    for topic, partition, offset, _, value in read_records(bootstrap, sorted({topic for topic, _ in sent})):
        stored.setdefault((topic, partition), []).append((offset, value or b""))
    problems = []
    for key, values in sorted(stored.items()):
        expected = sent.get(key, [])
        if [value for _, value in values] == expected:
            continue
        offsets: dict[bytes, list[int]] = {}
        for offset, value in values:
            offsets.setdefault(value, []).append(offset)
        wanted = Counter(expected)
        extra = {value: at for value, at in offsets.items() if len(at) > wanted[value]}
        missing = sum((wanted - Counter(value for _, value in values)).values())
        order = [offsets[value][0] for value in dict.fromkeys(expected) if value in offsets]
        behind = sum(1 for before, after in zip(order, order[1:], strict=False) if after < before)
        problems.append(f"{key[0]}[{key[1]}]: {len(values)} records for {len(expected)} sent; {len(extra)} written "
                        f"more often than sent (e.g. at offsets {next(iter(extra.values()), [])}), {missing} "
                        f"missing, {behind} written before one sent ahead of them")
    assert not problems, "the input is not as it was sent:\n" + "\n".join(problems)
