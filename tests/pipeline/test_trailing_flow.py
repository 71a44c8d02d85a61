"""Trailing windows through the whole dataflow: every one equals the batch computation's, in a reporting zone.

The fixed event set (``tests.eventset``, four hours of traffic) is stretched over twelve days, so that visitors,
leads and their stage changes come back on later days, and moved across the nights the clocks change in New York,
to Kolkata and to UTC. The reference (``tests/reference.py``) lays trailing windows out from the README with
``zoneinfo`` and counts distinct visitors per window directly.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from stream.core.calendar import trailing_days
from stream.pipeline.cells import CellStage
from stream.pipeline.keys import WATERMARK_KEY_PREFIX, cell_of
from stream.pipeline.state import apply_writes
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from stream.stages import cell_config
from tests.eventset import DAY_START, heartbeats, mixed, retimed
from tests.pipeline.feeding import KINDS, fed_and_closed
from tests.pipeline.scheduled import ScheduledFlow, queue_all
from tests.pipeline.test_calendar_flow import spread_events
from tests.reference import compute, from_records, mismatches

RATES = {"EUR": Decimal("1.08")}
DAY = 86_400_000
HOUR = 3_600_000
STRETCH = 72  # four hours become twelve days


def stretched(messages: list[tuple[str, bytes]], to: int) -> list[tuple[str, bytes]]:
    """The same messages, each valid event's integer ``ts`` moved to ``to`` plus STRETCH times its time after the
    set's start (bad input stays as it was)."""
    return retimed(messages, lambda ts: to + (ts - DAY_START - 8 * HOUR) * STRETCH)


def start_ms(record: dict) -> int:
    return round(datetime.fromisoformat(record["window"]["start"].replace("Z", "+00:00")).timestamp() * 1000)


def run(messages: list[tuple[str, bytes]], settings: Settings, start: int,
        flow_type: type[LocalFlow] = LocalFlow) -> tuple[LocalFlow, list]:
    """A flow fed ``messages`` over two input partitions, then heartbeats far later that close every window."""
    return fed_and_closed(messages, settings, start, start + 400 * DAY, flow_type)


NIGHTS = [
    pytest.param("America/New_York", 1_793_505_600_000 - 5 * DAY, id="new-york-fall-back-2026-11-01"),
    pytest.param("America/New_York", 1_772_946_000_000 - 5 * DAY, id="new-york-spring-forward-2026-03-08"),
    pytest.param("Asia/Kolkata", 1_795_285_800_000, id="kolkata-2026-11-22"),
    pytest.param("UTC", DAY_START, id="utc-2025-11-22"),
]


@pytest.mark.parametrize(("zone", "start"), NIGHTS)
def test_trailing_windows_equal_the_batch_computation(zone: str, start: int) -> None:
    messages, _ = mixed(seed=3)
    moved = stretched(messages, start)
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "3", "KPI_TIMEZONE": zone,
                                  "KPI_WINDOW_SIZES": "1h,1d", "KPI_TRAILING_DAYS": "3d,7d",
                                  # Stretched, the set's five minutes of disorder are six hours.
                                  "KPI_ALLOWED_LATENESS": "1d"})
    flow, every = run(moved, settings, start)
    want = compute(every, RATES, sizes=("1h", "1d", "last3d", "last7d"), zone=zone)
    records = list(flow.records.values())
    got = from_records(records)
    wrong = mismatches(got, want)
    assert not wrong, f"{len(wrong)} KPI keys differ, e.g. {wrong[:5]}"
    trailing = [record for record in records if record["window"]["kind"] == "trailing"]
    assert {record["window"]["size"] for record in trailing} == {"3d", "7d"}
    assert any(record["kpi"] == "visitors" for record in trailing)


class _Capturing(LocalFlow):
    """A flow that also keeps every envelope its cell stage read, in order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.envelopes: list[bytes] = []

    def _run_cells(self, partition: int, envelope: bytes) -> None:
        self.envelopes.append(envelope)
        super()._run_cells(partition, envelope)


def _values(records: dict[str, dict]) -> dict[str, tuple[object, object, bool]]:
    return {key: (record["numerator"], record["denominator"], record["final"]) for key, record in records.items()}


def _process(stage: CellStage, table: dict[bytes, bytes], batch: list[tuple[int, bytes]]) -> tuple[
        list[tuple[bytes, bytes | None]], dict[str, dict]]:
    out = stage.process(0, batch, DAY_START)
    apply_writes(table, out.writes)
    return list(out.writes.items()), {record.key: record.record for record in out.records}


def test_a_cell_partition_restarted_after_any_part_of_a_batch_ends_with_the_same_trailing_windows() -> None:
    """A trailing window's content is folded again from the days at a restart; its records' revisions and
    finality come back from the table. Restarted after parts of the writes of each batch in which trailing
    windows were made, closed or dropped (all of them included, its records unsent), and reading that batch
    again in two (so that the first batch after the stop may hold a watermark short of the windows the table
    holds), the last record of every key is the same as without a stop."""
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "1",
                                  "KPI_TIMEZONE": "America/New_York", "KPI_WINDOW_SIZES": "1h,1d",
                                  "KPI_TRAILING_DAYS": "2d,4d", "KPI_ALLOWED_LATENESS": "1d"})
    start = 1_793_505_600_000 - 5 * DAY
    messages, _ = mixed(seed=5)
    flow, sent = run(stretched(messages, start), settings, start, _Capturing)
    assert isinstance(flow, _Capturing)
    batches = [list(enumerate(flow.envelopes))[first:first + 7] for first in range(0, len(flow.envelopes), 7)]

    table: dict[bytes, bytes] = {}
    stage = CellStage(cell_config(settings), table)
    tables_before, writes_of, records_of = [], [], []
    for batch in batches:
        tables_before.append(dict(table))
        writes, records = _process(stage, table, batch)
        writes_of.append(writes)
        records_of.append(records)
    whole = {key: record for records in records_of for key, record in records.items()}
    assert _values(whole) == _values(flow.records)
    wrong = mismatches(from_records(list(whole.values())),
                       compute(sent, RATES, sizes=("1h", "1d", "last2d", "last4d"), zone="America/New_York"))
    assert not wrong, wrong[:5]
    assert any(record["window"]["kind"] == "trailing" and record["final"] for record in whole.values())
    trailing_batches = [i for i, writes in enumerate(writes_of)
                        if any(trailing_days(cell_of(key).size) for key, _ in writes if key.startswith(b"["))]
    assert len(trailing_batches) >= 5
    for i in trailing_batches:
        writes = writes_of[i]
        # Stops: none of the writes; the first half; every day but no window (windows are written after the cells);
        # every cell but no watermark (written last); every write but the last; every write but no record sent (the
        # worker killed between the two).
        windows_from = next(n for n, (key, _) in enumerate(writes)
                            if key.startswith(b"[") and trailing_days(cell_of(key).size))
        watermark_from = next(n for n, (key, _) in enumerate(writes) if key.startswith(WATERMARK_KEY_PREFIX))
        for stop in sorted({0, len(writes) // 2, windows_from, watermark_from, len(writes) - 1, len(writes)}):
            replica = dict(tables_before[i])
            apply_writes(replica, dict(writes[:stop]))
            # The records the batch had sent before the stop are on the topic: none, since a batch sends them
            # after its writes.
            got = {key: record for records in records_of[:i] for key, record in records.items()}
            restarted = CellStage(cell_config(settings), replica)
            # The batch read again in two: a restarted worker batches its input anew, and its first batch may
            # not take the watermark as far as the batch whose writes it found.
            for batch in [batches[i][:1], batches[i][1:], *batches[i + 1:]]:
                got.update(_process(restarted, replica, batch)[1])
            assert _values(got) == _values(whole), (i, stop)


@pytest.mark.parametrize("seed", [3, 41, 77, 120, 256])
def test_trailing_windows_are_exact_when_the_stages_run_in_any_order_with_stalls(seed: int) -> None:
    """Partitions read unevenly, rerouted lead values late, the clock jumping: the scheduler of
    ``tests.pipeline.scheduled`` over twelve days of traffic, with windows of 2 and 4 days in New York."""
    partitions = 4
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": str(partitions),
                                  "KPI_TIMEZONE": "America/New_York", "KPI_WINDOW_SIZES": "1h,1d",
                                  "KPI_TRAILING_DAYS": "2d,4d", "KPI_ALLOWED_LATENESS": "1d",
                                  # The heartbeats, two months on, come in at the processing clock of the data.
                                  "KPI_MAX_FUTURE_SKEW": "3650d"})
    start = 1_793_505_600_000 - 5 * DAY
    messages, _ = mixed(seed=seed % 30)
    moved = stretched(messages, start)
    flow = ScheduledFlow(settings, partitions, random.Random(seed), 0.01, clock_ms=start)
    queue_all(flow, moved, seed)
    kinds = {topic: kind.value for kind, topic in settings.input_topics.items()}
    beats = heartbeats(list(kinds), partitions, start + 60 * DAY)
    for topic, partition, raw in beats:
        flow.produce(kinds[topic], raw, partition)
    flow.run()
    want = compute(moved + [(kinds[topic], raw) for topic, _, raw in beats], RATES,
                   sizes=("1h", "1d", "last2d", "last4d"), zone="America/New_York")
    records = list(flow.records.values())
    wrong = mismatches(from_records(records), want)
    assert not wrong, f"{len(wrong)} KPI keys differ after {flow.stalls} stalls, e.g. {wrong[:3]}"
    assert not flow.counts.late_contributions
    assert any(record["window"]["kind"] == "trailing" and record["final"] for record in records)


# Additive KPIs: a trailing window's numerator is the sum of its days'.
ADDITIVE = ("lead_volume", "mql_volume", "won_volume", "page_views", "cost_per_lead", "pipeline")


@given(spread_events())
@hypothesis_settings(max_examples=int(os.environ.get("KPI_PROPERTY_EXAMPLES", "25")), deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
def test_each_trailing_window_is_the_days_it_covers_folded_together(events: list[tuple[int, str, bytes]]) -> None:
    """Any events over some 300 days of New York's calendar (both clock changes): every trailing window of 7 and
    30 days equals the reference, and its additive numerators the sum of its daily windows' as streamed."""
    zone = "America/New_York"
    settings = Settings.from_env({"KPI_PARTITIONS": "2", "KPI_TIMEZONE": zone, "KPI_WINDOW_SIZES": "1d",
                                  "KPI_TRAILING_DAYS": "7d,30d"})
    clock = [events[0][0]]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    for ts, kind, raw in events:
        clock[0] = ts
        flow.send_batch([(KINDS[kind], raw, 0)])
    clock[0] = beat_at = events[-1][0] + 400 * DAY
    beats = heartbeats(list(settings.input_topics.values()), 1, beat_at)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    flow.tick()
    got = from_records(list(flow.records.values()))
    sent = [(kind, raw) for _, kind, raw in events] + [(topic, raw) for topic, _, raw in beats]
    wrong = mismatches(got, compute(sent, RATES, sizes=("1d", "last7d", "last30d"), zone=zone))
    assert not wrong, wrong[:3]
    local = ZoneInfo(zone)
    for (kpi, size, start, dims), (numerator, _) in got.items():
        if not size.startswith("last") or kpi not in ADDITIVE:
            continue
        first = datetime.fromtimestamp(start / 1000, local).date()
        days = [datetime(day.year, day.month, day.day, tzinfo=local) for day in
                (first + timedelta(days=n) for n in range(int(size[4:-1])))]
        parts = [got.get((kpi, "1d", round(day.timestamp() * 1000), dims), (0, None))[0] for day in days]
        assert numerator == pytest.approx(sum(part or 0 for part in parts)), (kpi, size, start, dims)
