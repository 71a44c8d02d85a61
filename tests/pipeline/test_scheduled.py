"""The stages interleaved as on the broker (see ``scheduled``): results still equal the batch computation.

The seeds listed first are ones that found defects: a broker stall let input partitions with unread messages
count as idle (page views then rejected as late), and a lead accepted while a peer partition held the watermark
back lost its attribution to a window a peer had closed (nothing dead-lettered, the numbers just short).
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from stream.pipeline.routing import source_name
from stream.settings import Settings
from tests.eventset import DAY_START, MINUTE, doc, heartbeats, mixed
from tests.pipeline.scheduled import ScheduledFlow, queue_all
from tests.reference import compute, from_records, mismatches

RATES = {"EUR": Decimal("1.08")}
PARTITIONS = 4


def _flow(seed: int, stall_chance: float = 0.0) -> ScheduledFlow:
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": str(PARTITIONS)})
    return ScheduledFlow(settings, PARTITIONS, random.Random(seed), stall_chance, clock_ms=DAY_START)


def _finish(flow: ScheduledFlow) -> list[tuple[str, bytes]]:
    """Heartbeats on every input partition, then everything drained; the heartbeats as (kind, payload)."""
    kinds = {topic: kind.value for kind, topic in flow.settings.input_topics.items()}
    beats = heartbeats(list(kinds), PARTITIONS, DAY_START + 3 * 86_400_000)
    for topic, partition, raw in beats:
        flow.produce(kinds[topic], raw, partition)
    flow.run()
    return [(kinds[topic], raw) for topic, _, raw in beats]


def _assert_exact(flow: ScheduledFlow, messages: list[tuple[str, bytes]], expected: dict[str, int]) -> None:
    beats = _finish(flow)
    wrong = mismatches(from_records(list(flow.records.values())), compute(messages + beats, RATES))
    assert not wrong, f"{len(wrong)} KPI keys differ after {flow.stalls} stalls, e.g. {wrong[:3]}"
    assert not flow.counts.late_contributions
    assert sum(flow.counts.rejected.values()) == expected["rejected"], flow.counts.rejected


@pytest.mark.parametrize("seed", [31, 55, *range(100, 115)])
def test_a_20_second_stall_mid_backlog_changes_nothing(seed: int) -> None:
    """Half the data is queued, a few steps run, the broker stalls for 20 s, then the rest comes."""
    messages, expected = mixed(seed=seed % 30)
    flow = _flow(seed)
    half = len(messages) // 2
    queue_all(flow, messages[:half], seed)
    for _ in range(random.Random(seed).randint(1, 200)):
        flow.step()
    flow.stall(20_000)
    queue_all(flow, messages[half:], seed + 1)
    _assert_exact(flow, messages, expected)


@pytest.mark.parametrize("seed", [60, 97, 101, 155, *range(300, 310)])
def test_stalls_at_random_points_change_nothing(seed: int) -> None:
    messages, expected = mixed(seed=seed % 30)
    flow = _flow(seed, stall_chance=0.01)
    queue_all(flow, messages, seed)
    _assert_exact(flow, messages, expected)
    assert flow.stalls


@pytest.mark.parametrize("seed", [0, 48, *range(200, 215)])
def test_a_lead_accepted_while_a_peer_lags_is_never_half_counted(seed: int) -> None:
    """One leads partition stays empty (so it is left out of the watermark), then gets leads from behind.

    Those leads are late by the others' progress. Each is either rejected (dead-lettered as late) or counted
    in full, its attribution included: never counted with its attribution dropped at a closed window.
    """
    rand = random.Random(seed)
    messages, _ = mixed(seed=seed % 30)
    flow = _flow(seed)
    held: list[tuple[str, bytes]] = []
    cut = rand.randint(len(messages) // 4, len(messages) * 3 // 4)
    for position, (kind, raw) in enumerate(messages):
        partition = rand.randrange(PARTITIONS)
        if kind == "leads" and partition == 0 and position < cut:
            held.append((kind, raw))
        else:
            flow.produce(kind, raw, partition)
        if position == cut:
            for _ in range(rand.randint(0, 300)):
                flow.step()
            flow.stall(12_000)  # longer than the idle timeout: the empty partition is left out from here
            for held_kind, held_raw in held:
                flow.produce(held_kind, held_raw, 0)
    _finish(flow)
    assert not flow.counts.late_contributions, flow.counts.late_contributions


@pytest.mark.parametrize("rebalanced", [False, True])
def test_an_input_partition_idle_at_a_rebalance_holds_back_the_others_as_before_it(rebalanced: bool) -> None:
    """Page views partition 0 stops at 09:00 while the other partitions go on to 13:00; the worker is idle.

    Idle, partition 0 holds the watermark at 09:00 and advances it with the processing clock from there. A
    rebalance (its new owner has had no event of it) must not change that: new page views of 09:05 appended to
    it after the hand-over are on time, as they are without one, and not rejected as late because the others'
    progress closed their windows while its new owner knew nothing of it.
    """
    flow = _flow(seed=5)
    topics = {kind.value: topic for kind, topic in flow.settings.input_topics.items()}
    messages: list[tuple[str, bytes]] = []

    def view(event_id: str, ts: int, partition: int) -> None:
        raw = doc(event_id, ts, visitor_id=f"v-{event_id}", url="/pricing", channel="email")
        messages.append(("page-views", raw))
        flow.produce("page-views", raw, partition)

    for minute in range(0, 60, 5):
        view(f"early-{minute}", DAY_START + minute * MINUTE, 0)
    for partition in range(1, PARTITIONS):
        for minute in range(0, 300, 5):
            view(f"p{partition}-{minute}", DAY_START + minute * MINUTE, partition)
    for kind in ("leads", "stage-changes", "spend"):
        for partition, raw in enumerate(heartbeats([topics[kind]], PARTITIONS, DAY_START + 300 * MINUTE)):
            flow.produce(kind, raw[2], partition)
            messages.append((kind, raw[2]))
    flow.run()
    source = source_name(topics["page-views"], 0)
    if rebalanced:
        flow.ingest.progress.forget([source])  # what the revocation does; its new owner has had no event of it
    for _ in range(15_000 // flow.settings.watermark_interval_ms):  # the idle timeout passes, reported as it does
        flow.clock_ms += flow.settings.watermark_interval_ms
        flow.run()
    for minute in range(65, 70):
        view(f"after-{minute}", DAY_START + minute * MINUTE, 0)
    flow.run()
    assert not flow.counts.rejected, flow.counts.rejected
    _assert_exact(flow, messages, {"rejected": 0})
