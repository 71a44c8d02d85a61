"""Input written by a transactional producer on Apache Kafka: what aborted transactions wrote never counts.

Kafka Connect's exactly-once sources, Debezium, Flink's and Kafka Streams' exactly-once sinks write in
transactions; a transaction that aborts leaves its records in the log, skipped only by a ``read_committed``
reader, and every transaction leaves a marker at the offset after its records. The worker must count only the
committed records, treat the offsets of markers and aborted records as nothing to read (no reading again, no
lag left at the end of a partition), and let a partition that holds nothing but aborted records and markers go
idle, as an empty partition does. Tansu has no transactions: these tests run on Apache Kafka whatever the
session's broker is.
"""

from __future__ import annotations

import random
import re
import signal
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.eventset import DAY_START, MINUTE, doc, mixed
from tests.integration.harness import INPUTS, Names, create_topics, start_worker
from tests.integration.outcome import (
    as_input,
    assert_final_kpis_exact,
    beats,
    dead_letter_sources,
    unhandled_inputs,
    wait_for_watermark,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The one input partition that gets nothing but aborted transactions: it must go idle for windows to close.
ONLY_ABORTED = ("spend", 3)
# A jump the consumer reads again for: after a seek, or Faust's races, never a transaction marker.
_READ_AGAIN = re.compile(r"delivered offset \d+ where \d+ was next; reading again")


def phantoms(count: int, seed: int) -> list[tuple[str, bytes]]:
    """Events that never happened, each of which would change some KPI if counted: leads, spend, page views of
    real visitors (touches), stage changes of real leads."""
    rand = random.Random(seed)
    made: list[tuple[str, bytes]] = []
    for i in range(count):
        ts = DAY_START + rand.randrange(0, 180) * MINUTE
        kind = i % 4
        if kind == 0:
            made.append(("leads", doc(f"phantom-lead{i}", ts, lead_id=f"PL{i}", channel="paid_social",
                                      campaign="q4-webinar", visitor_id=f"v{rand.randrange(60)}")))
        elif kind == 1:
            made.append(("spend", doc(f"phantom-spend{i}", ts, channel="email", amount="999.99", currency="USD")))
        elif kind == 2:
            made.append(("page-views", doc(f"phantom-view{i}", ts, visitor_id=f"v{rand.randrange(60)}",
                                           url="/pricing", channel="organic_search")))
        else:
            made.append(("stage-changes", doc(f"phantom-change{i}", ts, lead_id=f"L{rand.randrange(60)}",
                                              stage="won", amount="50000", currency="USD")))
    return made


class TransactionalInput:
    """An upstream producer that writes in transactions, committing the real events and aborting phantoms."""

    def __init__(self, bootstrap: str, names: Names) -> None:
        self.names = names
        self.producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{names.prefix}-upstream",
                                  "linger.ms": 5})
        self.producer.init_transactions(30)
        self.aborted = 0

    def commit(self, messages: list[tuple[str, int, bytes]], per_transaction: int = 40) -> int:
        for first in range(0, len(messages), per_transaction):
            self.producer.begin_transaction()
            for topic, partition, value in messages[first:first + per_transaction]:
                self.producer.produce(topic, value=value, partition=partition)
            self.producer.commit_transaction(30)
        return len(messages)

    def abort(self, messages: list[tuple[str, int, bytes]]) -> None:
        self.producer.begin_transaction()
        for topic, partition, value in messages:
            self.producer.produce(topic, value=value, partition=partition)
        self.producer.flush(30)  # the phantoms are in the log before the abort marker
        self.producer.abort_transaction(30)
        self.aborted += len(messages)

    def interleaved(self, real: list[tuple[str, int, bytes]], fake: list[tuple[str, int, bytes]],
                    chunks: int) -> int:
        """The real events committed in ``chunks`` transactions, each followed by an aborted one of phantoms."""
        size = -(-len(real) // chunks)
        sent = 0
        for k in range(chunks):
            sent += self.commit(real[k * size:(k + 1) * size])
            self.abort(fake[k::chunks])
        return sent

    def close(self) -> None:
        assert self.producer.flush(30) == 0
        del self.producer  # destroyed here, not after the broker stopped (when it logs refused connections)


def _placed(names: Names, messages: list[tuple[str, bytes]], seed: int) -> list[tuple[str, int, bytes]]:
    """Spread over the partitions as any input is, except the one partition kept for aborted transactions."""
    only_aborted = names.topic(ONLY_ABORTED[0])
    return [(topic, 2 if (topic, partition) == (only_aborted, ONLY_ABORTED[1]) else partition, raw)
            for topic, partition, raw in as_input(names, messages, seed)]


def test_aborted_upstream_transactions_are_never_counted_even_across_a_sigkill(
        kafka: str, names: Names, tmp_path: Path) -> None:
    messages, expected = mixed(seed=23)
    real = _placed(names, messages, seed=9)
    rand = random.Random(4)
    fake = [(names.topic(topic), rand.randrange(4), raw) for topic, raw in phantoms(120, seed=5)]
    fake += [(names.topic(ONLY_ABORTED[0]), ONLY_ABORTED[1], raw) for _, raw in phantoms(8, seed=6)]
    # Every partition but the one of aborted transactions only gets a heartbeat past the data.
    sent_beats = [beat for beat in beats(names) if beat[:2] != (names.topic(ONLY_ABORTED[0]), ONLY_ABORTED[1])]
    create_topics(kafka, [names.topic(topic) for topic in INPUTS])
    upstream = TransactionalInput(kafka, names)
    half = len(real) // 2
    data = {"KPI_DATA_DIR": str(tmp_path / "data"), "KPI_BATCH_MAX": "20"}
    try:
        upstream.interleaved(real[:half], fake[:len(fake) // 2], chunks=4)
        first = start_worker(names, kafka, tmp_path, label="first", **data)
        try:
            first.wait_until(lambda: first.accounted() >= half * 0.8, what="most of the first half")
            # More input as the worker runs; it is killed while reading it.
            upstream.interleaved(real[half:], fake[len(fake) // 2:], chunks=4)
            first.process.send_signal(signal.SIGKILL)
            assert first.process.wait(timeout=10) == -signal.SIGKILL
        finally:
            first.stop()
        upstream.commit(sent_beats)  # in a transaction too: every partition with data ends in a commit marker
    finally:
        upstream.close()
    second = start_worker(names, kafka, tmp_path, label="second", **data)
    try:
        # Nothing left to read, the end markers of every partition included (lag 0), and the partition of
        # aborted transactions only idle: otherwise the watermark never passes the data.
        wait_for_watermark(second, timeout_s=150)
        assert not second.errors(), second.errors()
    finally:
        assert second.stop() == 0, second.log_tail()
    assert_final_kpis_exact(kafka, names, messages, sent_beats, restarted=True)
    phantom_ids = {raw for _, _, raw in fake}
    dead = set(dead_letter_sources(kafka, names))
    assert len(dead) == expected["rejected"], sorted(dead)
    assert len(phantom_ids) == upstream.aborted == 128
    # Markers and aborted records cost no reading again, before the kill or after it.
    for label in ("first", "second"):
        assert not _READ_AGAIN.findall((tmp_path / f"{label}.log").read_text(errors="replace")), label
    # Every committed input message reached the entity stage or the dead letters (a read_committed reader lists
    # the inputs: the aborted phantoms are not input).
    assert unhandled_inputs({"bootstrap.servers": kafka, "isolation.level": "read_committed"}, names) == []
    print(f"\ntransactional input: {len(real)} committed messages, {upstream.aborted} aborted phantoms, "
          f"{len(sent_beats)} heartbeats")
