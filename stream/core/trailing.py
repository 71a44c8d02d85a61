"""Trailing windows: the last N whole local days, ending at each local midnight, folded from the daily cells.

The trailing window of N days that ends at local date D (exclusive) covers the dates D-N … D-1. Its cell is the
daily cells of those dates folded together: counts, spend and sums added, time-to-conversion samples merged (so
that medians and p90 stay exact). A cell stage keeps only the trailing windows still open (the current one, and
the one that ended at the last midnight while the allowed lateness lasts): a delta to a day updates each of those
that covers it (two per length at most, never N), and a new window is folded from the days once, when the
watermark enters its last day.

Distinct visitors are no sum of daily parts: a visitor seen on three days of a week is one visitor of the week.
The visitor's partition therefore writes, beside each day's first-time visitor count, how many days before that
day the visitor was last seen in the same scope (all traffic, a channel, a page): the count named ``~k`` of a
daily cell holds the visitors first seen that day whose previous day was ``k`` days earlier (``~K``, the longest
trailing length: none within K days). A visitor belongs to the window that ends at D exactly once, counted on the
first of its days there: on day d, where the previous day d-k lies before the window (k > d - (D - N)). A view
that arrives late, between two days the visitor was seen on, moves the later day's ``~k`` (see
:func:`note_visitor_day`).

Cohort conversion has no trailing windows: a cohort's cells keep maturing for the conversion window (90 days by
default) after they end, so every trailing cohort window of that span would stay open and a delta to a day would
update up to N of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stream.core.calendar import Calendar
from stream.core.cells import ASSET, COHORT, TRAFFIC, CellDelta, CellId, CellState

GAP_PREFIX = "~"
VISITORS = "visitors"
# The families whose "visitors" count is of distinct visitors, rebuilt for a trailing window from the gaps.
DISTINCT = (TRAFFIC, ASSET)


def has_trailing(family: str) -> bool:
    """Whether a family's daily cells fold into trailing windows (see the module docstring for cohorts)."""
    return family != COHORT


def gap_name(days: int) -> str:
    """The count of a daily cell's first-time visitors whose previous day in the scope was ``days`` days earlier."""
    return f"{GAP_PREFIX}{days}"


def note_visitor_day(seen: dict[int, int], day: int, start: int, longest: int,
                     cell_at: Callable[[int], CellId], deltas: dict[CellId, CellDelta]) -> None:
    """Count a visitor's first view in a scope on local date ``day`` (window start ``start``) among the gaps.

    Args:
        seen: the scope's other days the visitor was seen on (day number -> that day's window start), kept for at
            least ``longest`` days back.
        day: the new day's number.
        start: its daily window's start.
        longest: the longest trailing length: the gap written for "none within that many days".
        cell_at: the scope's daily cell of a window start.
        deltas: where the counts go.
    """
    before = max((other for other in seen if other < day), default=None)
    after = min((other for other in seen if other > day), default=None)
    deltas.setdefault(cell_at(start), CellDelta()).add(gap_name(_gap(day, before, longest)), 1)
    if after is not None:
        # A view arriving late between two of the visitor's days: the later day's gap shrinks.
        was, now = _gap(after, before, longest), _gap(after, day, longest)
        if was != now:
            later = deltas.setdefault(cell_at(seen[after]), CellDelta())
            later.add(gap_name(was), -1)
            later.add(gap_name(now), 1)


def _gap(day: int, before: int | None, longest: int) -> int:
    return longest if before is None else min(day - before, longest)


def open_ends(calendar: Calendar, watermark: int, allowed_lateness_ms: int) -> list[int]:
    """The end dates (day numbers, latest first) of the trailing windows still open at ``watermark``: the current
    one, ending at the next local midnight, and those whose end plus the allowed lateness is still ahead."""
    current = calendar.day_number(watermark) + 1
    ends = [current]
    while calendar.midnight(ends[-1] - 1) + allowed_lateness_ms > watermark:
        ends.append(ends[-1] - 1)
    return ends


def covers(end: int, days: int, day: int) -> bool:
    """Whether the trailing window of ``days`` ending at date ``end`` holds date ``day``."""
    return end - days <= day < end


def shifted(delta: CellDelta, family: str, day: int, end: int, days: int) -> CellDelta:
    """A daily cell's delta as it changes the trailing window of ``days`` ending at ``end`` that holds ``day``:
    the day's distinct visitors give way to those of its gaps that are new to the window."""
    if family not in DISTINCT or not delta.counts:
        return delta
    counts: dict[str, int] = {}
    _add_distinct(counts, delta.counts, day - (end - days))
    return CellDelta(counts, delta.spend_micros, delta.samples_added, delta.samples_removed, delta.sums)


def _add_distinct(counts: dict[str, int], day_counts: dict[str, int], new_after: int) -> None:
    """Add a day's counts to a trailing window's, its distinct visitors from the gaps longer than ``new_after``
    (those reach before the window: the visitor is new to it on that day)."""
    for name, value in day_counts.items():
        if name[0] == GAP_PREFIX:
            if int(name[1:]) > new_after:
                counts[VISITORS] = counts.get(VISITORS, 0) + value
        elif name != VISITORS:
            counts[name] = counts.get(name, 0) + value


def fold(family: str, end: int, days: int, daily: Iterable[tuple[int, CellState]]) -> CellState:
    """The trailing window of ``days`` ending at date ``end`` folded from its daily cells' states (day, state)."""
    folded = CellState()
    counts, sums, samples = folded.counts, folded.sums, folded.samples
    distinct = family in DISTINCT
    for day, state in daily:
        if distinct:
            _add_distinct(counts, state.counts, day - (end - days))
        else:
            for name, value in state.counts.items():
                counts[name] = counts.get(name, 0) + value
        folded.spend_micros += state.spend_micros
        for name, value in state.sums.items():
            sums[name] = sums.get(name, 0) + value
        for step, values in state.samples.items():
            kept = samples.get(step)
            if kept is None:
                samples[step] = list(values)
            else:
                kept += values
                kept.sort()  # two sorted runs: one merge
    return folded
