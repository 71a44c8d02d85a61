"""How often a cell's records go out (``KPI_RECORD_INTERVAL``): held changes, their release, and nothing lost."""

from __future__ import annotations

import orjson

from stream.core.cells import CellId
from stream.core.events import Kind
from stream.core.timeutil import parse_event_time
from stream.pipeline.cells import CellStage
from stream.pipeline.eventtime.sources import HOLD
from stream.pipeline.pacing import RecordPace
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from stream.stages import cell_config
from tests.eventset import DAY_START, MINUTE, heartbeats, mixed
from tests.pipeline.feeding import KINDS, fed_and_closed

HOUR_CELL = CellId("f", 3_600_000, DAY_START, None, None)
DAY_CELL = CellId("f", 86_400_000, DAY_START, None, None)
NOTHING = orjson.dumps({"src": 0, "d": [], "wm": HOLD})  # a cell envelope with no delta and no progress


def test_a_cell_is_held_for_the_interval_after_its_records_and_due_once_it_is_over() -> None:
    pace = RecordPace(500)
    assert not pace.holds(HOUR_CELL, 1000)  # never sent: its first change goes out at once
    pace.sent(HOUR_CELL, 1000)
    pace.sent(DAY_CELL, 1200)
    assert pace.due(1400) == []
    assert pace.holds(HOUR_CELL, 1400)  # changed 400 ms after its records: waits
    assert pace.waiting() == 1
    assert pace.due(1499) == []
    assert pace.due(1500) == [HOUR_CELL]  # its hold is over: due, once
    assert pace.due(1800) == []  # the day cell's hold ended with no change waiting: nothing to send
    assert not pace.holds(DAY_CELL, 1800)
    assert not pace.holds(HOUR_CELL, 1800)  # due but not sent again yet: not held
    pace.sent(HOUR_CELL, 1800)
    assert pace.holds(HOUR_CELL, 2000)
    assert pace.due(2299) == [] and pace.due(2300) == [HOUR_CELL]


def test_a_forgotten_cell_is_never_due_and_no_interval_holds_nothing() -> None:
    pace = RecordPace(500)
    pace.sent(HOUR_CELL, 0)
    assert pace.holds(HOUR_CELL, 100)
    pace.forget(HOUR_CELL)  # dropped while a change waited
    assert pace.due(10_000) == [] and pace.waiting() == 0
    unpaced = RecordPace(0)
    unpaced.sent(HOUR_CELL, 0)
    assert not unpaced.holds(HOUR_CELL, 0)
    assert unpaced.due(10_000) == []


def test_a_clock_gone_back_holds_no_longer_than_the_interval() -> None:
    pace = RecordPace(500)
    pace.sent(HOUR_CELL, 10_000)
    assert not pace.holds(HOUR_CELL, 9_000)  # the clock went back 1 s: the hold would last 1.5 s, it ends
    assert pace.due(10_500) == []
    pace.sent(HOUR_CELL, 9_000)
    assert pace.holds(HOUR_CELL, 9_200)
    assert pace.due(9_500) == [HOUR_CELL]


def _settings(interval: str) -> Settings:
    return Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "3",
                              "KPI_RECORD_INTERVAL": interval})


def _fed(interval: str) -> LocalFlow:
    """The mixed event set through a flow (``fed_and_closed``): every window closed, and what cells held back sent."""
    messages, _ = mixed()
    flow, _ = fed_and_closed(messages, _settings(interval), DAY_START, DAY_START + 3 * 86_400_000)
    return flow


def _content(record: dict) -> dict:
    return {name: value for name, value in record.items() if name not in ("revision", "emitted_at")}


def test_paced_records_end_at_the_same_truth_with_far_fewer_of_them() -> None:
    every, paced = _fed("0"), _fed("500ms")
    assert {key: _content(record) for key, record in paced.records.items()} == {
        key: _content(record) for key, record in every.records.items()}
    assert len(paced.record_log) < len(every.record_log) / 3, (len(paced.record_log), len(every.record_log))
    # A key's records are at least the interval apart, but for a final one, which goes out at once.
    last_at: dict[str, int] = {}
    for key, record in paced.record_log:
        at = parse_event_time(record["emitted_at"])
        if key in last_at and not record["final"]:
            assert at - last_at[key] >= 500, (key, record)
        last_at[key] = at
    # Revisions still grow by one per record of a key.
    revisions: dict[str, list[int]] = {}
    for key, record in paced.record_log:
        revisions.setdefault(key, []).append(record["revision"])
    assert all(seen == list(range(1, len(seen) + 1)) for seen in revisions.values())


def _lead(event_id: str, lead_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "ts": DAY_START + MINUTE, "lead_id": lead_id, "channel": "email"})


def test_a_change_held_at_a_stop_goes_out_when_its_cell_partition_is_restored() -> None:
    settings = Settings.from_env({"KPI_PARTITIONS": "1"})  # the default interval
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", "L1"))
    flow.send(Kind.LEAD, _lead("b", "L2"))  # the same clock: the second lead's change is held
    volume = flow.latest("lead_volume", "1h", "2025-11-22T08:00:00Z")
    assert volume is not None and volume["numerator"] == 1 and volume["revision"] == 1
    # The worker stops here. The table holds both leads; a new owner sends the last records, then the held change.
    restarted = CellStage(cell_config(settings), flow.cell_table)
    records = [record.record for record in restarted.process(0, [(1000, NOTHING)], DAY_START).records]
    volumes = [(r["numerator"], r["revision"]) for r in records
               if r["kpi"] == "lead_volume" and r["window"]["size"] == "1h" and r["dimensions"] == {}]
    assert volumes == [(1, 1), (2, 2)]
    assert restarted.process(0, [(1001, NOTHING)], DAY_START).records == []


def test_every_cell_partition_hears_the_watermark_each_interval_when_it_does_not_move() -> None:
    clock = [DAY_START]
    flow = LocalFlow(_settings("500ms"), clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", "L1"))
    flow.send(Kind.LEAD, _lead("b", "L2"))  # held
    sent = {p: flow._offsets[("cells", p)] for p in range(3)}
    clock[0] += 100
    flow.tick()  # the watermark has not moved, and the last report went to every partition 100 ms ago
    assert {p: flow._offsets[("cells", p)] for p in range(3)} == sent
    volume = flow.latest("lead_volume", "1h", "2025-11-22T08:00:00Z")
    assert volume is not None and volume["numerator"] == 1
    clock[0] += 400
    flow.tick()  # 500 ms since: every cell partition hears it, and the held change goes out
    assert all(flow._offsets[("cells", p)] > sent[p] for p in range(3))
    volume = flow.latest("lead_volume", "1h", "2025-11-22T08:00:00Z")
    assert volume is not None and volume["numerator"] == 2 and volume["revision"] == 2


def _view(event_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "ts": DAY_START + MINUTE, "visitor_id": event_id, "url": "/p"})


def test_a_trailing_window_change_held_at_a_stop_goes_out_when_its_cell_partition_is_restored() -> None:
    settings = Settings.from_env({"KPI_PARTITIONS": "1", "KPI_TRAILING_DAYS": "7d"})
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    # Every input partition at the day's start: a watermark, so the day's trailing windows exist.
    beats = heartbeats(list(settings.input_topics.values()), 1, DAY_START)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    # Both held: the window's records went out with the heartbeat's own page view.
    flow.send(Kind.PAGE_VIEW, _view("a"))
    flow.send(Kind.PAGE_VIEW, _view("b"))

    def trailing_views(records: list[dict]) -> list[tuple[int, int]]:
        return [(r["numerator"], r["revision"]) for r in records
                if r["kpi"] == "page_views" and r["window"]["kind"] == "trailing" and r["dimensions"] == {}]

    assert trailing_views([record for _, record in flow.record_log]) == [(1, 1)]
    restarted = CellStage(cell_config(settings), flow.cell_table)
    records = [record.record for record in restarted.process(0, [(1000, NOTHING)], DAY_START).records]
    assert trailing_views(records) == [(1, 1), (3, 2)]  # the last record again, then the held changes
    assert restarted.process(0, [(1001, NOTHING)], DAY_START).records == []
