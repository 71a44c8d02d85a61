"""Trailing windows folded from days: the visitors' gaps, the fold, which windows are open, and their labels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.calendar import Calendar, parse_trailing, size_label, trailing_days, trailing_size
from stream.core.cells import FUNNEL, TRAFFIC, CellDelta, CellId, CellState
from stream.core.trailing import covers, fold, note_visitor_day, open_ends, shifted
from stream.core.windows import DAY, Windows

LONGEST = 9


def _traffic(start: int) -> CellId:
    return CellId(TRAFFIC, DAY, start, None, None)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 30)), max_size=60))
def test_distinct_visitors_of_any_trailing_window_from_the_daily_gaps(views: list[tuple[int, int]]) -> None:
    """Views (visitor, day) arriving in any order, late ones between two days a visitor was seen on included: for
    every length up to the longest and every end, the visitors folded from the days' gaps, and those a delta
    adds to a window as it arrives, are the visitors with a view in the window."""
    days: dict[int, CellState] = {}
    seen: dict[int, dict[int, int]] = {}
    lengths = (2, 5, LONGEST)
    live = {(length, end): CellState() for length in lengths for end in range(1, 42)}
    for visitor, day in views:
        visitor_days = seen.setdefault(visitor, {})
        if day in visitor_days:
            continue
        deltas: dict[CellId, CellDelta] = {}
        note_visitor_day(dict(visitor_days), day, day * DAY, LONGEST, _traffic, deltas)
        visitor_days[day] = day * DAY
        for cell, delta in deltas.items():
            changed = cell.start_ms // DAY
            days.setdefault(changed, CellState()).apply(delta)
            for (length, end), state in live.items():
                if covers(end, length, changed):
                    state.apply(shifted(delta, TRAFFIC, changed, end, length))
    for (length, end), state in live.items():
        want = sum(1 for visitor_days in seen.values() if any(covers(end, length, day) for day in visitor_days))
        folded = fold(TRAFFIC, end, length, [(day, days[day]) for day in days if covers(end, length, day)])
        assert folded.counts.get("visitors", 0) == want, (length, end)
        assert state.counts.get("visitors", 0) == want, (length, end)


def test_a_fold_adds_counts_money_and_sums_and_merges_samples_in_order() -> None:
    one = CellState(counts={"lead": 2, "mql": 1}, spend_micros=5, samples={"lead>mql": [1, 7]}, sums={"pipeline": 3})
    two = CellState(counts={"lead": 1}, spend_micros=2, samples={"lead>mql": [3, 9], "mql>sal": [4]})
    folded = fold(FUNNEL, 10, 7, [(4, one), (5, two)])
    assert folded.counts == {"lead": 3, "mql": 1}
    assert (folded.spend_micros, folded.sums) == (7, {"pipeline": 3})
    assert folded.samples == {"lead>mql": [1, 3, 7, 9], "mql>sal": [4]}
    assert one.samples == {"lead>mql": [1, 7]}  # the days' states are left as they were


def test_the_open_windows_are_the_current_one_and_those_within_the_lateness() -> None:
    new_york = Calendar("America/New_York")
    midnight = 1_793_505_600_000  # 2026-11-01T00:00-04:00
    today = new_york.day_number(midnight)
    assert open_ends(new_york, midnight + 3_600_000, 600_000) == [today + 1]
    assert open_ends(new_york, midnight + 300_000, 600_000) == [today + 1, today]
    assert open_ends(new_york, midnight + 300_000, 2 * DAY) == [today + 1, today, today - 1]
    # The fall-back day lasts 25 hours: its end is the next local midnight, 05:00 UTC.
    assert new_york.midnight(today + 1) - midnight == 25 * 3_600_000


def test_a_trailing_window_is_described_as_such_and_keyed_apart_from_a_tumbling_one() -> None:
    windows = Windows.of((3_600_000, DAY, 30 * DAY), Calendar("America/New_York"), (30,))
    start = 1_791_345_600_000  # 2026-10-07T00:00-04:00
    assert windows.describe(trailing_size(30), start) == {
        "size": "30d", "start": "2026-10-07T00:00:00-04:00", "end": "2026-11-06T00:00:00-05:00",
        "zone": "America/New_York", "kind": "trailing"}
    assert windows.key_part(trailing_size(30), start) == "last30d|2026-10-07T00:00:00-04:00"
    assert windows.key_part(30 * DAY, start) != windows.key_part(trailing_size(30), start)
    assert size_label(trailing_size(7)) == "last7d" and trailing_days(trailing_size(7)) == 7
    assert trailing_days(30 * DAY) == 0
    assert windows.trailing_days_of(trailing_size(7)) == 0  # not configured


@pytest.mark.parametrize(("text", "days"), [("7d", 7), (" 30d ", 30), ("90", 90)])
def test_trailing_lengths_are_whole_days(text: str, days: int) -> None:
    assert parse_trailing(text) == days


@pytest.mark.parametrize(("text", "says"), [("1d", "2 to 366"), ("400d", "2 to 366"), ("1w", "whole days"),
                                             ("12h", "whole days"), ("", "whole days")])
def test_other_trailing_lengths_are_refused_saying_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_trailing(text)


def test_trailing_windows_need_the_days_they_are_folded_from() -> None:
    with pytest.raises(ValueError, match="add 1d"):
        Windows.of((3_600_000,), Calendar("UTC"), (7,))
