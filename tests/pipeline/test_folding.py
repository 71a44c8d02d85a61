"""KPI_VALUE_LIMIT: values past the limit are folded into `other`, named records stay exact, nothing is lost."""

from __future__ import annotations

import os
import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.cells import FUNNEL, OTHER, CellDelta, CellId
from stream.core.windows import utc_windows
from stream.pipeline.cells import CellConfig, CellStage
from stream.pipeline.eventtime.sources import HOLD
from stream.pipeline.state import apply_writes
from tests.eventset import DAY_START, MINUTE, heartbeats
from tests.pipeline.test_properties import RATES, _arrival, _stream, event_sets
from tests.reference import assert_folded_exact, compute, from_records

HOUR = 3_600_000


@settings(
    max_examples=int(os.environ.get("KPI_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(event_sets(), st.integers(0, 10**6), st.integers(1, 2))
def test_folded_kpis_keep_named_values_exact_and_every_total(
        events: list[tuple[int, str, bytes]], seed: int, limit: int) -> None:
    messages = _arrival(events, seed)
    flow = _stream(messages, seed, {"KPI_VALUE_LIMIT": str(limit)})
    beats = heartbeats(list(flow.settings.input_topics.values()), 1, DAY_START + 3 * 86_400_000)
    want = compute(messages + [(topic, raw) for topic, _, raw in beats], RATES)
    assert_folded_exact(from_records(list(flow.records.values())), want, limit)
    assert not flow.counts.late_contributions
    assert not flow.counts.rejected


def test_with_room_for_every_value_nothing_is_folded() -> None:
    rand = random.Random(3)
    events = [(DAY_START + i * MINUTE, "leads", orjson.dumps(
        {"event_id": f"l{i}", "ts": DAY_START + i * MINUTE, "lead_id": f"L{i}", "channel": f"ch{i % 5}",
         "campaign": f"cp{rand.randrange(3)}", "asset": f"/a{i % 4}", "owner": "ann"})) for i in range(40)]
    messages = [(topic, raw) for _, topic, raw in events]
    flow = _stream(messages, 1, {"KPI_VALUE_LIMIT": "500"})
    assert flow.counts.folded_deltas == 0
    assert not any(OTHER in record["dimensions"].values() for record in flow.records.values())
    folded = _stream(messages, 1, {"KPI_VALUE_LIMIT": "2"})
    assert folded.counts.folded_deltas > 0
    # The day of the leads (the heartbeats that close it come days later): two channels keep theirs.
    volumes = [record for record in folded.records.values() if record["kpi"] == "lead_volume"
               and record["window"]["size"] == "1d" and record["window"]["start"] < "2025-11-24"]
    by_channel = {record["dimensions"]["channel"]: record["numerator"] for record in volumes
                  if set(record["dimensions"]) == {"channel"}}
    assert len(by_channel) == 3 and OTHER in by_channel
    assert sum(by_channel.values()) == 40
    assert [record["numerator"] for record in volumes if not record["dimensions"]] == [40]


# A cell partition restarted after any prefix of a batch's table writes, reading the batch again.

def _envelope(source: int, deltas: list[tuple[str, int]], watermark: int = HOLD) -> bytes:
    """Lead deltas (channel, position) for the channel-level funnel cells of one hour."""
    items = [[list(CellId(FUNNEL, HOUR, DAY_START, channel, None)), where, CellDelta(counts={"lead": 1}).to_doc()]
             for channel, where in deltas]
    return orjson.dumps({"src": source, "d": items, "wm": watermark})


def _leads_by_channel(table: dict[bytes, bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in table.items():
        if key.startswith(b"["):
            cell = CellId(*orjson.loads(key))
            out[cell.channel or ""] = orjson.loads(value)["c"].get("lead", 0)
    return out


def test_a_restart_after_any_part_of_a_batch_counts_every_folded_delta_once() -> None:
    config = CellConfig(1, utc_windows((HOUR,)), 10 * MINUTE, ("lead", "mql"), "USD", value_limit=2)
    # Upstream positions 0 and 1 each carry one delta per channel; five channels for two own cells.
    envelopes = [(0, _envelope(0, [("a", 0), ("b", 0), ("c", 0), ("d", 0)])),
                 (1, _envelope(0, [("e", 1), ("a", 1), ("d", 1)])),
                 (2, _envelope(1, [("c", 4), ("b", 4)]))]
    table: dict[bytes, bytes] = {}
    first, second = envelopes[:2], envelopes[2:]
    stage = CellStage(config, table)
    apply_writes(table, stage.process(0, first, DAY_START).writes)
    before = dict(table)
    writes = list(stage.process(0, second, DAY_START).writes.items())
    apply_writes(table, dict(writes))
    whole = _leads_by_channel(table)
    assert whole == {"a": 2, "b": 2, OTHER: 5}
    for stop in range(len(writes) + 1):
        replica = dict(before)
        apply_writes(replica, dict(writes[:stop]))
        # The offsets of the second batch were not committed: it is read again by a restarted stage.
        restarted = CellStage(config, replica)
        apply_writes(replica, restarted.process(0, second, DAY_START).writes)
        assert _leads_by_channel(replica) == whole, stop
    # The whole of both batches read again changes nothing.
    again = dict(table)
    restarted = CellStage(config, again)
    out = restarted.process(0, envelopes, DAY_START)
    apply_writes(again, out.writes)
    assert _leads_by_channel(again) == whole
    assert out.counts.replayed_deltas == 9
