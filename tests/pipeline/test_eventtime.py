"""Tests for stream.pipeline.eventtime: per-partition progress with idle advancement, and the join downstream."""

import random

import pytest

from stream.core.calendar import Calendar
from stream.core.cells import CellId
from stream.core.validation import Validator
from stream.core.windows import Windows
from stream.pipeline.eventtime.closing import DueCells, is_closed, is_late
from stream.pipeline.eventtime.join import WatermarkJoin
from stream.pipeline.eventtime.sources import HOLD, SourceProgress
from stream.pipeline.ingest import IngestStage
from stream.pipeline.steps import progress_step
from stream.pipeline.wire import EntityEnvelope
from stream.runtime.local import MemoryOutput, run_now
from stream.settings import Settings

IDLE = 10_000  # ms of processing time


def progress_with(*observations):
    """SourceProgress after observe(partition, ts, now) for each observation."""
    progress = SourceProgress(idle_timeout_ms=IDLE)
    for partition, ts, now in observations:
        progress.observe(partition, ts, now)
    return progress


@pytest.mark.parametrize(
    ("observations", "owned", "now", "expected"),
    [
        # Never seen: holds the watermark while its first events may not be fetched yet.
        ([], ["p0"], 0, {"p0": HOLD}),
        ([("p0", 5_000, 100)], ["p0", "p1"], 200, {"p0": 5_000, "p1": HOLD}),
        ([("p0", 5_000, 100), ("p0", 3_000, 150)], ["p0"], 200, {"p0": 5_000}),
        ([("p0", 3_000, 100), ("p0", 5_000, 150)], ["p0"], 200, {"p0": 5_000}),
        # Silent for exactly the timeout: still holds at its maximum.
        ([("p0", 5_000, 100)], ["p0"], 100 + IDLE, {"p0": 5_000}),
        # Silent 2.5 s beyond the timeout: advances 2.5 s from its maximum.
        ([("p0", 5_000, 100)], ["p0"], 100 + IDLE + 2_500, {"p0": 7_500}),
        # An old event refreshes the partition's last activity: it is no longer idle.
        ([("p0", 5_000, 100), ("p0", 1_000, 20_000)], ["p0"], 25_000, {"p0": 5_000}),
        # One busy partition, one idle one.
        (
            [("p0", 5_000, 0), ("p1", 9_000, 0), ("p1", 9_500, 14_000)],
            ["p0", "p1"],
            15_000,
            {"p0": 10_000, "p1": 9_500},
        ),
        # Only owned partitions are reported.
        ([("p0", 5_000, 0), ("p1", 9_000, 0)], ["p1"], 1_000, {"p1": 9_000}),
    ],
    ids=[
        "never-seen",
        "never-seen-beside-seen",
        "max-kept",
        "max-moves",
        "idle-boundary",
        "idle-advances",
        "activity-resets-idle",
        "idle-and-busy",
        "only-owned",
    ],
)
def test_source_progress_report(observations, owned, now, expected):
    assert progress_with(*observations).report(owned, now) == expected


def test_forgotten_partition_starts_over_as_never_seen():
    progress = progress_with(("p0", 5_000, 0), ("p1", 6_000, 0))
    progress.forget(["p0", "p9"])
    assert progress.report(["p0", "p1"], 1_000) == {"p0": HOLD, "p1": 6_000}


def test_never_seen_partition_holds_then_is_left_out():
    progress = SourceProgress(idle_timeout_ms=IDLE)
    assert progress.report(["p0"], 1_000) == {"p0": HOLD}
    assert progress.report(["p0"], 1_000 + IDLE - 1) == {"p0": HOLD}
    assert progress.report(["p0"], 1_000 + IDLE) == {"p0": None}
    progress.observe("p0", 42_000, 1_000 + IDLE + 5)
    assert progress.report(["p0"], 1_000 + IDLE + 10) == {"p0": 42_000}


def test_a_partition_with_unread_messages_is_not_idle_however_long_it_is_silent():
    # p0 delivered an event at 0, then its fetches stopped (a broker stall, or a backlog read unevenly) while
    # messages were still there to read; p1 was never fetched at all. Marked busy at 1 s steps until 30 s.
    progress = progress_with(("p0", 5_000, 0))
    for now in range(0, 30_001, 1_000):
        progress.mark_busy(["p0", "p1"], now)
    assert progress.report(["p0", "p1"], 30_000) == {"p0": 5_000, "p1": HOLD}
    # Caught up from 30 s on (no longer marked): idle after the timeout, counted from the last mark.
    for now in range(31_000, 30_000 + IDLE + 2_001, 1_000):
        progress.mark_busy([], now)
    assert progress.report(["p0", "p1"], 30_000 + IDLE + 2_000) == {"p0": 7_000, "p1": None}


def test_idle_time_runs_only_up_to_the_last_mark():
    # The marking stopped at 5 s (its timer blocked on a stalled broker): at 60 s nothing is taken as idle that
    # was not idle at 5 s, whatever the clock says.
    progress = progress_with(("p0", 5_000, 0))
    progress.mark_busy(["p1"], 5_000)
    assert progress.report(["p0", "p1"], 60_000) == {"p0": 5_000, "p1": HOLD}
    assert progress.report_after([], ["p0", "p1"], 60_000) == {"p0": 5_000, "p1": HOLD}
    progress.mark_busy([], 60_000)
    assert progress.report(["p0", "p1"], 60_000) == {"p0": 5_000 + 60_000 - IDLE, "p1": None}


@pytest.mark.parametrize(("unread", "reported"), [(["p0"], 5_000), ([], 5_000 + 60_000 - IDLE)])
def test_the_timer_s_report_keeps_a_partition_with_unread_messages_from_turning_idle(unread, reported):
    # The step the worker's timer runs: quiet for 60 s, p0 is idle only if the timer finds nothing left to read.
    stage = IngestStage(Validator(Settings.from_env({}).rates, 1 << 20), entity_partitions=2, idle_timeout_ms=IDLE)
    stage.progress.observe("p0", 5_000, 0)
    sent: list[tuple[int, bytes]] = []
    out = MemoryOutput({}, {}, [], lambda route, partition, value: sent.append((partition, value)))
    run_now(progress_step(stage, ["p0"], unread, 60_000, 2, out))
    assert [(partition, EntityEnvelope.decode(value).progress) for partition, value in sent] == [
        (0, {"p0": reported}), (1, {"p0": reported})]


def test_without_marks_idle_time_runs_with_the_clock():
    progress = progress_with(("p0", 5_000, 0))
    assert progress.report(["p0"], IDLE + 1_000) == {"p0": 6_000}


def test_report_after_a_batch_covers_its_events_and_changes_nothing_yet():
    progress = progress_with(("p0", 5_000, 0), ("p1", 6_000, 0))
    batch = [("p0", 9_000), ("p0", 7_000), ("p2", 3_000)]
    ahead = progress.report_after(batch, ["p0", "p1", "p2", "p3"], 2_000)
    assert ahead == {"p0": 9_000, "p1": 6_000, "p2": 3_000, "p3": HOLD}
    # Nothing is recorded until the batch is delivered: the periodic report still shows the progress before it.
    assert progress.report(["p0", "p1", "p2"], 2_000) == {"p0": 5_000, "p1": 6_000, "p2": HOLD}
    for partition, ts in batch:
        progress.observe(partition, ts, 2_000)
    assert progress.report(["p0", "p1", "p2", "p3"], 2_000) == ahead


def test_join_holds_while_a_source_holds_and_releases_when_it_turns_idle():
    join = WatermarkJoin(expected=frozenset({"a", "b"}))
    join.update({"a": 100_000, "b": HOLD}, 0)
    assert not is_closed(1_000, join.watermark(), 0)  # HOLD keeps every window open
    join.update({"b": None}, 0)
    assert join.watermark() == 100_000
    join.update({"b": HOLD}, 0)  # a later hold cannot pull a released watermark back
    assert join.watermark() == 100_000


# ------------------------------------------------------------------- join


def join_of(*sources):
    return WatermarkJoin(expected=frozenset(sources))


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ([], None),
        ([{"a": 100}], None),
        ([{"a": 100, "b": None}], 100),
        ([{"a": None, "b": None}], None),
        ([{"a": 100, "b": 50}], 50),
        ([{"a": 100}, {"b": 50}], 50),
        ([{"a": 100, "b": 50}, {"b": 70}], 70),
        ([{"a": 100, "b": 50}, {"b": 200}], 100),
        # A source cannot go back (a restarted upstream re-reading old events).
        ([{"a": 100, "b": 50}, {"b": 20}], 50),
        # An idle source whose new owner has no event of its own for it keeps what it had (and advances with
        # the clock, which does not move here).
        ([{"a": 100, "b": 50}, {"b": None}], 50),
        # One that never had any progress stops holding the others back.
        ([{"a": 100, "b": HOLD}, {"b": None}], 100),
        # Unexpected sources are ignored: they neither hold nor lower the watermark.
        ([{"a": 100, "c": 1}], None),
        ([{"a": 100, "b": 90, "c": 1}], 90),
    ],
    ids=[
        "no-reports",
        "one-source-silent",
        "none-holds-nothing-back",
        "all-none",
        "min",
        "min-over-reports",
        "source-advances",
        "other-source-becomes-min",
        "source-cannot-go-back",
        "none-after-value-keeps-it",
        "none-after-hold-leaves-it-out",
        "unexpected-does-not-count",
        "unexpected-ignored",
    ],
)
def test_watermark_join(reports, expected):
    join = join_of("a", "b")
    for report in reports:
        join.update(report, 0)
    assert join.watermark() == expected


def test_watermark_never_goes_back_when_a_new_low_source_appears():
    join = join_of("a", "b")
    join.update({"a": 100, "b": None}, 0)
    assert join.watermark() == 100
    join.update({"b": 40}, 0)  # b had no events; its first ones are old
    assert join.progress["b"] == 40
    assert join.watermark() == 100
    join.update({"b": 120}, 0)
    assert join.watermark() == 100  # a is now the minimum again
    join.update({"a": 130}, 0)
    assert join.watermark() == 120


@pytest.mark.parametrize("seed", range(20))
def test_the_watermark_kept_between_reports_is_the_one_computed_afresh(seed):
    """A join keeps its watermark until a report changes the progress: asked between any reports (values, None,
    HOLD, idle time passing), it answers what a join with the same progress computes."""
    rand = random.Random(seed)
    join = WatermarkJoin(frozenset("abc"), idle_timeout_ms=IDLE)
    now = 0
    for _ in range(200):
        now += rand.choice([0, 1_000, IDLE])
        reports = {source: rand.choice([None, HOLD, rand.randrange(0, 100_000)])
                   for source in rand.sample("abcd", rand.randint(1, 3))}
        join.update(reports, now)
        afresh = WatermarkJoin(join.expected, dict(join.progress), join.floor, IDLE, dict(join.moved_ms),
                               dict(join.idle))
        assert join.watermark() == afresh.watermark()
        assert join.watermark() == afresh.watermark()  # asked again, unchanged


def test_watermark_with_no_expected_sources_is_unknown():
    join = join_of()
    join.update({"a": 100}, 0)
    assert join.watermark() is None


@pytest.mark.parametrize(
    ("first", "second", "changed"),
    [
        ({"a": 1}, {"a": 1}, False),
        ({"a": 1}, {"a": 2}, True),
        ({"a": 2}, {"a": 1}, False),
        ({"a": None}, {"a": None}, False),
        ({"a": None}, {"a": 1}, True),
        ({"a": 1}, {"a": None}, True),
        ({"a": 1}, {"c": 5}, False),
        ({"a": 1}, {"b": None}, True),
    ],
    ids=[
        "same",
        "forward",
        "backward",
        "none-again",
        "first-value",
        "value-then-none",
        "unexpected",
        "first-report-of-b",
    ],
)
def test_update_reports_whether_progress_changed(first, second, changed):
    join = join_of("a", "b")
    assert join.update(first, 0) is True
    assert join.update(second, 0) is changed


@pytest.mark.parametrize(
    ("window_end", "watermark", "lateness", "closed"),
    [
        (1_000, None, 0, False),
        (1_000, 999, 0, False),
        (1_000, 1_000, 0, True),
        (1_000, 1_500, 600, False),
        (1_000, 1_600, 600, True),
    ],
    ids=["unknown-watermark", "before-end", "at-end", "within-lateness", "after-lateness"],
)
def test_is_closed(window_end, watermark, lateness, closed):
    assert is_closed(window_end, watermark, lateness) is closed


def test_a_source_idle_under_a_new_owner_advances_from_what_it_had_with_the_clock():
    """After a rebalance its new owner has had no event of it: it goes on as an idle source, not left out."""
    join = WatermarkJoin(expected=frozenset({"a", "b"}), idle_timeout_ms=10_000)
    join.update({"a": 900_000, "b": 50_000}, 1_000)  # b's last move, reported by its previous owner
    join.update({"b": HOLD}, 3_000)  # its new owner's hold: nothing known yet, nothing moves
    assert join.watermark() == 50_000
    assert join.update({"b": None}, 5_000) is True  # idle, within the timeout of its last move
    assert join.watermark() == 50_000
    join.update({"b": None}, 21_000)
    assert join.watermark() == 60_000  # 21 s after its last move, 10 s of it the idle timeout
    join.update({"b": HOLD}, 40_000)  # another owner's hold: no advance while nobody has checked it
    assert join.watermark() == 60_000
    join.update({"b": None}, 41_000)
    assert join.watermark() == 80_000  # counted up to the latest None, from the last move
    join.update({"b": 70_000}, 42_000)  # events again, older than where it got to: nothing goes back
    assert join.progress["b"] == 80_000 and not join.idle
    join.update({"b": None}, 55_000)
    assert join.watermark() == 83_000  # idle again, counted from when its events came


def test_an_idle_source_restored_without_the_time_of_its_last_move_counts_from_its_first_none():
    join = WatermarkJoin(expected=frozenset({"a", "b"}), idle_timeout_ms=10_000)
    join.progress.update({"a": 900_000, "b": 50_000})  # as written before the times were kept
    join.update({"b": None}, 100_000)
    assert join.watermark() == 50_000
    join.update({"b": None}, 115_000)
    assert join.watermark() == 55_000


HOUR_MS, DAY_MS = 3_600_000, 86_400_000
UTC_WINDOWS = Windows.of((HOUR_MS, DAY_MS), Calendar("UTC", 0))


def _cell(size: int, start_ms: int) -> CellId:
    return CellId("lead_volume", size, start_ms, None, None)


@pytest.mark.parametrize(
    ("watermark", "closed", "dropped"),
    [
        # Lateness 10 min: the first hour closes at 01:10, the day at 24:10.
        (HOUR_MS + 599_999, [], []),
        # A final cell is kept one more window length after its end, then dropped: the hour before, at 01:10.
        (HOUR_MS + 600_000, [_cell(HOUR_MS, 0)], [_cell(HOUR_MS, -HOUR_MS)]),
        (DAY_MS + 600_000, [_cell(HOUR_MS, 0), _cell(DAY_MS, 0)], [_cell(HOUR_MS, -HOUR_MS)]),
    ],
)
def test_a_watermark_closes_the_cells_past_their_end_and_lateness_and_drops_those_kept_long_enough(
        watermark: int, closed: list[CellId], dropped: list[CellId]) -> None:
    cells = DueCells(lambda cell: UTC_WINDOWS.end(cell.size, cell.start_ms), 600_000)
    cells.add_open(_cell(HOUR_MS, 0))
    cells.add_open(_cell(DAY_MS, 0))
    cells.add_final(_cell(HOUR_MS, -HOUR_MS))  # closed before: its end was 00:00
    assert cells.close(watermark, watermark) == (closed, dropped)
    assert cells.final == {_cell(HOUR_MS, -HOUR_MS), *closed} and cells.open.isdisjoint(closed)


def test_due_cells_close_and_drop_what_a_scan_of_every_cell_would() -> None:
    rand = random.Random(11)
    lateness = 600_000
    cells = DueCells(lambda cell: UTC_WINDOWS.end(cell.size, cell.start_ms), lateness)
    open_cells: set[CellId] = set()
    final_cells: set[CellId] = set()
    watermark = 0
    held: int | None = None  # the watermark before: the cell stage drops by it
    for _ in range(300):
        for _ in range(rand.randrange(4)):  # new open cells, some already due (found open in a table)
            size = rand.choice((HOUR_MS, DAY_MS))
            start = UTC_WINDOWS.calendar.start(watermark + rand.randrange(-DAY_MS, 2 * DAY_MS), size)
            cell = CellId("lead_volume", size, start, rand.choice(("a", "b", None)), None)
            if cell not in open_cells and cell not in final_cells:
                open_cells.add(cell)
                cells.add_open(cell)
        watermark += rand.randrange(0, 3 * HOUR_MS)
        # What the cell stage scanned for before: every final cell, then every open cell.
        dropped = {c for c in final_cells if is_closed(UTC_WINDOWS.end(c.size, c.start_ms) + c.size, held,
                                                       lateness)}
        closed = {c for c in open_cells if is_closed(UTC_WINDOWS.end(c.size, c.start_ms), watermark, lateness)}
        got_closed, got_dropped = cells.close(watermark, held)
        held = watermark
        assert (set(got_closed), set(got_dropped)) == (closed, dropped)
        assert len(got_closed) == len(closed) and len(got_dropped) == len(dropped)  # none twice
        for cell in got_dropped:
            cells.discard_final(cell)
        final_cells = (final_cells - dropped) | closed
        open_cells -= closed
        assert (cells.open, cells.final) == (open_cells, final_cells)


@pytest.mark.parametrize(
    ("ts", "watermark", "late"),
    [
        (0, None, False),  # no watermark yet: nothing is late
        (HOUR_MS - 1, HOUR_MS + 599_999, False),  # its hour closes at 01:10
        (HOUR_MS - 1, HOUR_MS + 600_000, True),
        (HOUR_MS, HOUR_MS + 600_000, False),  # the next hour is still open
    ],
)
def test_an_event_is_late_once_the_first_of_its_windows_to_end_is_closed(ts: int, watermark: int | None,
                                                                         late: bool) -> None:
    assert is_late(ts, watermark, UTC_WINDOWS, 600_000) is late
