"""Property-based: random event sets through the whole dataflow equal the reference, in any arrival order."""

from __future__ import annotations

import json
import os
import random
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.events import Kind
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from tests.eventset import DAY_START, MINUTE, heartbeats
from tests.reference import compute, from_records, mismatches

KINDS = {kind.value: kind for kind in Kind}
CHANNELS = ("email", "paid_social", "organic_search")
STAGES = ("mql", "sal", "sql", "opportunity", "won", "lost")
RATES = {"EUR": Decimal("1.08")}


@st.composite
def event_sets(draw: st.DrawFn) -> list[tuple[int, str, bytes]]:
    """(event time, topic, payload) of leads, stage changes (any subset, skips, before the lead), views, spend."""
    events: list[tuple[int, str, bytes]] = []
    serial = iter(range(10**6))

    def doc(ts: int, **fields: object) -> bytes:
        return json.dumps({"event_id": f"e{next(serial)}", "ts": ts, **fields}).encode()

    for lead in range(draw(st.integers(1, 8))):
        created = DAY_START + draw(st.integers(0, 180)) * MINUTE
        channel = draw(st.sampled_from(CHANNELS))
        campaign = draw(st.sampled_from([None, "q4", "spring"]))
        fields = {
            "lead_id": f"L{lead}",
            "channel": channel,
            "visitor_id": f"v{lead % 5}",
            "asset": draw(st.sampled_from(["/a", "/b"])),
            "owner": draw(st.sampled_from(["ann", "bob"])),
        }
        if campaign:
            fields["campaign"] = campaign
        events.append((created, "leads", doc(created, **fields)))
        for stage in draw(st.lists(st.sampled_from(STAGES), max_size=4, unique=True)):
            # Stage changes may come before the lead was created, in any order of stages.
            ts = created + draw(st.integers(-30, 240)) * MINUTE
            extra: dict[str, object] = {}
            if stage in ("opportunity", "won") and draw(st.booleans()):
                extra = {
                    "amount": str(draw(st.integers(1, 90)) * 100),
                    "currency": draw(st.sampled_from(["USD", "EUR"])),
                }
            events.append((ts, "stage-changes", doc(ts, lead_id=f"L{lead}", stage=stage, **extra)))
    for _ in range(draw(st.integers(0, 12))):
        ts = DAY_START + draw(st.integers(0, 200)) * MINUTE
        view: dict[str, object] = {
            "visitor_id": f"v{draw(st.integers(0, 6))}",
            "url": draw(st.sampled_from(["/a", "/b"])),
        }
        if draw(st.booleans()):
            view["channel"] = draw(st.sampled_from(CHANNELS))
        events.append((ts, "page-views", doc(ts, **view)))
    for _ in range(draw(st.integers(0, 4))):
        ts = DAY_START + draw(st.integers(0, 200)) * MINUTE
        events.append((ts, "spend", doc(ts, channel=draw(st.sampled_from(CHANNELS)), amount="125.50", currency="USD")))
    return events


def _arrival(events: list[tuple[int, str, bytes]], seed: int) -> list[tuple[str, bytes]]:
    """An arrival order: by event time with jitter under the lateness, plus repeats (duplicates)."""
    rand = random.Random(seed)
    jittered = sorted(events, key=lambda e: e[0] + rand.randrange(0, 8 * MINUTE))
    messages = [(topic, raw) for _, topic, raw in jittered]
    for topic, raw in rand.sample(messages, k=min(3, len(messages))):
        messages.insert(rand.randrange(len(messages) + 1), (topic, raw))
    return messages


def _stream(messages: list[tuple[str, bytes]], seed: int, env: dict[str, str] | None = None) -> LocalFlow:
    """The messages through a local flow in batches of 1 to 4, then heartbeats past the data, then what cells held
    back (``env``: settings)."""
    clock = [DAY_START]
    flow = LocalFlow(
        Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "2", **(env or {})}),
        clock=lambda: clock[0],
        input_partitions=1,
    )
    rand = random.Random(seed)
    position = 0
    while position < len(messages):
        size = rand.randint(1, 4)
        flow.send_batch([(KINDS[topic], raw, 0) for topic, raw in messages[position : position + size]])
        position += size
    beats = heartbeats(list(flow.settings.input_topics.values()), 1, DAY_START + 3 * 86_400_000)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    flow.tick()
    flow.settle()  # the clock never moves: every change after a cell's first records waited until now
    return flow


@settings(
    max_examples=int(os.environ.get("KPI_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(event_sets(), st.integers(0, 10**6))
def test_streamed_kpis_equal_the_reference_in_any_arrival_order(
    events: list[tuple[int, str, bytes]], seed: int
) -> None:
    first, second = _arrival(events, seed), _arrival(events, seed + 1)
    one, two = _stream(first, seed), _stream(second, seed + 7)
    beats = [
        (topic, raw)
        for topic, _, raw in heartbeats(list(one.settings.input_topics.values()), 1, DAY_START + 3 * 86_400_000)
    ]
    want = compute(first + beats, RATES)
    assert not mismatches(from_records(list(one.records.values())), want)
    assert from_records(list(two.records.values())) == from_records(list(one.records.values()))
    # Nothing was late or lost: every message is valid or a duplicate.
    assert not one.counts.rejected
    assert sum(one.counts.valid.values()) + sum(one.counts.duplicate.values()) == len(first) + len(beats)
