"""What a run on the broker produced, checked against the independent batch computation."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

import fastjsonschema

from stream.core.kpis import FAMILIES
from stream.core.validation import load_schema
from stream.pipeline.wire import EntityEnvelope, RoutedEvent
from tests.eventset import DAY_START, heartbeats
from tests.integration.harness import INPUTS, Broker, Names, Worker, read_records, read_topic, read_topics
from tests.reference import compute, from_records, mismatches

RATES = {"EUR": Decimal("1.08")}
HEARTBEAT_TS = DAY_START + 3 * 86_400_000


def as_input(names: Names, messages: list[tuple[str, bytes]], seed: int) -> list[tuple[str, int, bytes]]:
    rand = random.Random(seed)
    # The message key is never trusted: spread events over partitions at random.
    return [(names.topic(topic), rand.randrange(4), raw) for topic, raw in messages]


def beats(names: Names) -> list[tuple[str, int, bytes]]:
    """One event per input partition far past the data: the watermark closes every window of the set."""
    return heartbeats([names.topic(t) for t in INPUTS], 4, HEARTBEAT_TS)


def latest_records(bootstrap: Broker, names: Names, contiguous: bool = True) -> list[dict]:
    """The last record per key of every KPI topic, each checked against the schema and its revisions.

    In topic order a key's revisions never go back; a record re-sent after a restart repeats its revision. A
    worker stopped between persisting a cell and sending its records leaves those revisions unsent (the next
    owner sends the current one), so only a run without restarts has every revision from 1 (``contiguous``).
    """
    validate = fastjsonschema.compile(load_schema("kpi-record.schema.json"))
    latest: dict[bytes, dict] = {}
    revisions: dict[bytes, list[int]] = {}
    by_topic = read_topics(bootstrap, [names.topic(f"kpi-{family}") for family in FAMILIES])
    for key, value in (item for records in by_topic.values() for item in records):
        record = json.loads(value)
        validate(record)
        assert key is not None
        revisions.setdefault(key, []).append(record["revision"])
        latest[key] = record  # the last record per key is the current one (keys are per topic and partition)
    for key, seen in revisions.items():
        assert seen == sorted(seen), (key, seen)
        if contiguous:
            assert sorted(set(seen)) == list(range(1, len(set(seen)) + 1)), (key, seen)
    return list(latest.values())


def assert_final_kpis_exact(bootstrap: Broker, names: Names, messages: list[tuple[str, bytes]],
                            sent_beats: list[tuple[str, int, bytes]], restarted: bool = False,
                            sizes: tuple[str, ...] = ("1h", "1d"), zone: str = "UTC",
                            data_until: str = "2025-11-24T00:00:00Z") -> list[dict]:
    """Every KPI key's last record equals the batch computation (its windows of ``sizes`` in ``zone``), and every
    window of the data (starting before ``data_until``, RFC 3339 UTC) is final."""
    records = latest_records(bootstrap, names, contiguous=not restarted)
    want = compute(messages + [(topic.removeprefix(f"{names.prefix}-"), raw) for topic, _, raw in sent_beats], RATES,
                   sizes=sizes, zone=zone)
    wrong = mismatches(from_records(records), want)
    if wrong:
        dead = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("dead-letters"))]
        reasons = Counter((record["reason"], record["topic"].removeprefix(f"{names.prefix}-")) for record in dead)
        raise AssertionError(f"{len(wrong)} KPI keys differ (dead letters: {dict(reasons)}; input messages that "
                             f"reached neither the entity stage nor the dead letters: "
                             f"{unhandled_inputs(bootstrap, names) or 'none'}), e.g.\n" + "\n".join(wrong[:15]))
    until = datetime.fromisoformat(data_until.replace("Z", "+00:00")).timestamp()
    data = [r for r in records
            if datetime.fromisoformat(r["window"]["start"].replace("Z", "+00:00")).timestamp() < until]
    assert all(r["final"] for r in data if r["kpi"] != "cohort_conversion")
    return records


def wait_for_finals(worker: Worker, expected_total: int, timeout_s: float = 120.0) -> None:
    worker.wait_until(lambda: worker.accounted() >= expected_total, timeout_s,
                      what=f"{expected_total} accounted events")
    wait_for_watermark(worker, timeout_s)


def wait_for_watermark(worker: Worker, timeout_s: float = 120.0) -> None:
    """Wait until both stages' watermarks pass the data, nothing is left to read, and KPI records stop flowing.

    A stage's watermark gauge is set by the last batch of any of the worker's partitions, so it can show the
    heartbeats while another partition still has messages to read (one just taken over, say): the scale-out
    test once stopped its workers 5.5 s after the third took over partitions, with the last credit changes of
    an hour not applied. The worker's consumer lag (measured every 5 s) must be 0 too.
    """
    worker.wait_until(lambda: worker.total("leadgen_watermark_timestamp_seconds") >= 2 * HEARTBEAT_TS / 1000,
                      timeout_s, what="the watermark of both stages to pass the data")
    worker.wait_until(lambda: _lag(worker) == 0, timeout_s, what="nothing left to read")
    worker.wait_quiet("leadgen_kpi_records_total")
    worker.wait_until(lambda: _lag(worker) == 0, timeout_s, what="nothing left to read")


def _lag(worker: Worker) -> float:
    """Messages the worker has left to read over every partition it owns (-1 while it does not answer)."""
    try:
        samples = worker.metrics()
    except OSError:
        return -1.0
    return sum(value for (name, _), value in samples.items() if name == "leadgen_consumer_lag_messages")


def unhandled_inputs(bootstrap: Broker, names: Names) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every input message that reached neither the entity stage nor the
    dead-letter topic: lost, whatever the counters say."""
    inputs = [names.topic(name) for name in INPUTS]
    entities, dead_letters = f"{names.app_id}-entities", names.topic("dead-letters")
    produced, handled = set(), set()
    for topic, partition, offset, _, value in read_records(bootstrap, [*inputs, entities, dead_letters]):
        if topic == entities:
            # Ingest's envelopes: each event names the input message it came from (lead values sent between
            # entity partitions name none).
            handled.update((item.topic, item.partition, item.offset)
                           for item in EntityEnvelope.decode(value or b"").events if isinstance(item, RoutedEvent))
        elif topic == dead_letters:
            record = json.loads(value or b"")
            handled.add((record["topic"], record["partition"], record["offset"]))
        else:
            produced.add((topic, partition, offset))
    return sorted(produced - handled)


def dead_letters(bootstrap: Broker, names: Names) -> list[dict[str, Any]]:
    """Every dead-letter record, schema-checked; repeats kept."""
    validate = fastjsonschema.compile(load_schema("dead-letter.schema.json"))
    records = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("dead-letters"))]
    for record in records:
        validate(record)
    return records


def dead_letter_sources(bootstrap: Broker, names: Names) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every dead-letter record, schema-checked; repeats kept."""
    return [(record["topic"], record["partition"], record["offset"]) for record in dead_letters(bootstrap, names)]


def dead_letter_reasons(bootstrap: Broker, names: Names) -> list[tuple[str, int, int, str]]:
    """(topic, partition, offset, reason) of every dead-letter record: what a failed count shows."""
    return [(record["topic"], record["partition"], record["offset"], record["reason"])
            for record in dead_letters(bootstrap, names)]
