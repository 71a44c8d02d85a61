"""Hostile input on every input topic: dead-lettered with a precise reason, the worker unharmed, results exact."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.eventset import DAY_START, MINUTE, mixed
from tests.integration.harness import INPUTS, Names, create_topics, produce, producer_config, read_topic, start_worker
from tests.integration.outcome import as_input, assert_final_kpis_exact, beats, wait_for_finals

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TS = DAY_START + 60 * MINUTE
# One valid event per topic, the base every hostile variant is made from.
VALID = {
    "page-views": {"visitor_id": "hv", "url": "/pricing", "channel": "email"},
    "leads": {"lead_id": "HL1", "channel": "email"},
    "stage-changes": {"lead_id": "HL1", "stage": "mql"},
    "spend": {"channel": "email", "amount": "10", "currency": "USD"},
}
# The field of each topic that must be a string.
STRING_FIELD = {"page-views": "url", "leads": "lead_id", "stage-changes": "lead_id", "spend": "channel"}


def _doc(topic: str, n: int, **changes: object) -> bytes:
    # Built here rather than with eventset.event_doc: the changes may replace event_id and ts too.
    return json.dumps({"event_id": f"hostile-{topic}-{n}", "ts": TS, **VALID[topic], **changes}).encode()


def hostile(topic: str, rand: random.Random) -> list[tuple[bytes, str]]:
    """(payload, expected reason) for one topic: each kind of bad input the contract names, and some more."""
    field = STRING_FIELD[topic]
    good = _doc(topic, 0)
    cases = [
        (b"\x00\x07" + rand.randbytes(200), "invalid_json"),  # junk bytes
        (bytes(range(128, 256)), "invalid_json"),  # not UTF-8
        (good[: len(good) // 2], "invalid_json"),  # truncated
        (b'{"event_id":"deep","ts":1,"n":' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),  # nested too deep
        (good.replace(b'"ts": ' + str(TS).encode(), b'"ts": NaN'), "invalid_json"),
        (good.replace(b'"ts": ' + str(TS).encode(), b'"ts": 1e999'), "invalid_json"),  # Infinity
        (b"x" * 900_000, "too_large"),  # close to 1 MB, the clients' default message limit
        # Payloads whose dead letter is larger than the message itself: as JSON text, each control character
        # takes six bytes and each quote two; bytes that are not UTF-8 go as base64, a third more.
        (b"\x01" * 900_000, "too_large"),
        (b'"' * 900_000, "too_large"),
        (b"\xff" + rand.randbytes(899_999), "too_large"),
        (json.dumps([_doc(topic, 1).decode()]).encode(), "not_object"),
        (_doc(topic, 2, **{field: "x" * 5000}), "invalid_field"),  # huge string
        (_doc(topic, 3, **{field: 12345}), "invalid_field"),  # number where a string belongs
        (_doc(topic, 4, ts=str(TS)), "invalid_field"),  # number as a string
        (_doc(topic, 5, ts="9999-12-31T23:59:59Z"), "invalid_field"),  # far ahead of the clock
        (_doc(topic, 6, ts="0001-01-01T00:00:00Z"), "invalid_field"),  # before the epoch
        (_doc(topic, 7, event_id=None), "invalid_field"),
    ]
    if topic in ("spend", "stage-changes"):
        extra = {"stage": "won"} if topic == "stage-changes" else {}
        cases += [
            (_doc(topic, 8, amount="-5", currency="USD", **extra), "invalid_field"),
            (_doc(topic, 9, amount="1e20", currency="USD", **extra), "invalid_field"),  # absurd
            (_doc(topic, 10, amount="Infinity", currency="USD", **extra), "invalid_field"),
            (_doc(topic, 11, amount="12", currency="XYZ", **extra), "unknown_currency"),
        ]
    if topic == "stage-changes":
        cases.append((_doc(topic, 12, stage="promoted"), "invalid_field"))
    return cases


def _payload_bytes(record: dict) -> bytes:
    return record["payload"].encode() if "payload" in record else base64.b64decode(record["payload_base64"])


def test_hostile_input_on_every_topic_is_dead_lettered_precisely_and_harms_nothing(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    rand = random.Random(29)
    messages, expected = mixed(seed=23)
    good = as_input(names, messages, seed=7)
    bad = [(names.topic(topic), rand.randrange(4), raw, reason)
           for topic in INPUTS for raw, reason in hostile(topic, rand)]
    # Hostile messages scattered among the good ones, on every partition.
    payload = list(good)
    for topic, partition, raw, _ in bad:
        payload.insert(rand.randrange(len(payload) + 1), (topic, partition, raw))
    sent_beats = beats(names)
    worker = start_worker(names, bootstrap, tmp_path)
    try:
        sent = produce(bootstrap, payload) + produce(bootstrap, sent_beats)
        wait_for_finals(worker, sent)
        rejected = worker.total("leadgen_events_rejected_total")
        assert worker.process.poll() is None
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    # The good messages around the hostile ones give exactly the batch computation's KPIs.
    assert_final_kpis_exact(bootstrap, names, messages, sent_beats)
    assert rejected == expected["rejected"] + len(bad)
    want = Counter((topic, raw, reason) for topic, _, raw, reason in bad)
    got = Counter((record["topic"], _payload_bytes(record), record["reason"])
                  for record in (json.loads(value) for _, value in read_topic(bootstrap, names.topic("dead-letters"))))
    assert not want - got, sorted((topic, raw[:60], reason) for topic, raw, reason in want - got)


def test_a_message_too_large_for_a_whole_dead_letter_is_cut_and_harms_nothing(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """An input topic made for messages of up to 8 MB (Kafka refuses more than 1 MB by default; Tansu takes any
    size): 3.5 MB of control characters would make a 4.7 MB dead letter even as base64, over what the worker's
    producer sends."""
    huge = b"\x01" * 3_500_000
    good = json.dumps({"event_id": "after-huge", "ts": TS, **VALID["leads"]}).encode()
    cluster_id = create_topics(bootstrap, [names.topic("leads")], config={"max.message.bytes": "8000000"})
    worker = start_worker(names, bootstrap, tmp_path)
    try:
        producer = Producer({**producer_config(bootstrap, cluster_id), "message.max.bytes": 8_000_000})
        failures: list[str] = []
        for value in (huge, good):
            producer.produce(names.topic("leads"), value=value, partition=0,
                             on_delivery=lambda err, _: err and failures.append(str(err)))
        assert producer.flush(30) == 0
        assert not failures, failures
        worker.wait_until(lambda: worker.total("leadgen_events_rejected_total") == 1
                          and worker.total("leadgen_events_total") == 1, 60, what="both messages accounted")
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    [record] = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("dead-letters"))]
    assert (record["reason"], record["payload_bytes"], record["payload_truncated"]) == ("too_large", len(huge), True)
    assert base64.b64decode(record["payload_base64"]) == huge[:2 * 1024 * 1024]
