"""A cell partition's open trailing windows (``stream.core.trailing``): folded from its daily cells when the
watermark enters their last day, updated with each delta a daily cell takes, closed and dropped by the watermark.

A trailing window is a function of the daily cells, so its content is never stored: the cell table keeps only
what its records need across a restart (their revisions, and whether it is final), and a restart folds the open
windows again from the days. A crash between writes therefore cannot leave a window that disagrees with its days.

A batch writes its trailing windows after the daily cells and before the watermark (``CellStage.process``). So a
restart may find a window made by a batch whose watermark it does not find: a window ahead of the restored
watermark. It waits, with its revisions, until the watermark reaches its last day and folds it then; made at once,
it would be taken for a past window (and made final), and miss the deltas its days take meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from stream.core.cells import CellDelta, CellId, CellState
from stream.core.trailing import covers, fold, has_trailing, open_ends, shifted
from stream.core.windows import DAY, Windows

Series = tuple[str, str | None, str | None, str | None]  # family, channel, campaign, key


def series_of(cell: CellId) -> Series:
    """What a daily cell and the trailing windows folded from it share."""
    return cell.family, cell.channel, cell.campaign, cell.key


def stored(state: CellState) -> CellState:
    """What the table keeps of a trailing window: its records' revisions and whether it is final."""
    return CellState(emitted=state.emitted, final=state.final)


class TrailingCells:
    """The trailing windows of one cell partition.

    Args:
        windows: the window sizes in force, with the trailing lengths.
        allowed_lateness_ms: how long after its end a window stays open.
    """

    def __init__(self, windows: Windows, allowed_lateness_ms: int) -> None:
        self._windows = windows
        self._lateness = allowed_lateness_ms
        self._lengths = tuple(zip(windows.trailing_sizes, windows.trailing, strict=True))
        self.cells: dict[CellId, CellState] = {}  # open windows, and final ones until dropped
        self._days: dict[Series, set[int]] = {}  # the daily cells' starts, per series
        self._ends: list[int] = []  # the open windows' end dates, latest first
        self._last_end: int | None = None  # the latest end whose windows exist (None: none yet)
        # Per open window: (size, days, end date, start instant), and the first date any of them holds.
        self._spans: list[tuple[int, int, int, int]] = []
        self._first_day = 0
        self._restored: dict[CellId, CellState] = {}  # as the table had them, until folded again
        # Windows the table had that end after the current one: made by a batch whose watermark the table does not
        # hold (it is written last). Kept as the table had them until the watermark reaches their last day.
        self._ahead: dict[CellId, CellState] = {}

    def restore(self, cell: CellId, state: CellState) -> None:
        """A trailing window found in the table."""
        self._restored[cell] = state

    def resume(self, watermark: int | None) -> None:
        """Start from the watermark the partition's clock persisted: every window that ended before the ones open
        then was made before the stop (and is final); those still open are folded again at the next watermark."""
        if watermark is not None and self._windows.trailing:
            self._last_end = open_ends(self._windows.calendar, watermark, self._lateness)[-1] - 1

    def add_day(self, cell: CellId) -> None:
        """A daily cell now exists."""
        if cell.size == DAY and has_trailing(cell.family):
            self._days.setdefault(series_of(cell), set()).add(cell.start_ms)

    def drop_day(self, cell: CellId) -> None:
        """A daily cell dropped."""
        if cell.size == DAY:
            starts = self._days.get(series_of(cell))
            if starts is not None:
                starts.discard(cell.start_ms)
                if not starts:
                    del self._days[series_of(cell)]

    def took(self, cell: CellId, delta: CellDelta, load: Callable[[CellId], CellState]) -> list[CellId]:
        """A daily cell took ``delta``: the open windows that hold its day change with it; returns them."""
        if not self._spans or cell.size != DAY or not has_trailing(cell.family):
            return []
        day = self._windows.calendar.day_number(cell.start_ms)
        if day < self._first_day:
            return []
        changed: list[CellId] = []
        for size, days, end, start in self._spans:
            if not covers(end, days, day):
                continue
            window = CellId(cell.family, size, start, cell.channel, cell.campaign, cell.key)
            state = self.cells.get(window)
            if state is None:
                self._make(window, days, end, load)  # the delta is in the day already
            else:
                state.apply(shifted(delta, cell.family, day, end, days))
            changed.append(window)
        return changed

    def advance(self, watermark: int | None, load: Callable[[CellId], CellState]) -> tuple[
            list[CellId], list[CellId], list[tuple[CellId, CellState]]]:
        """Move to ``watermark``: make the windows that end up to its day (final at once where it passed their end
        plus the lateness: a watermark that leaps days makes every window in between), close those it passed,
        drop those final for a day.

        Returns:
            the windows that changed (new, or final now); those dropped; and the windows a restart found, with
            their states (their records are sent again, also where this call drops them: the batch that made them
            final may not have sent them).
        """
        if watermark is None or not self._windows.trailing:
            return [], [], []
        calendar = self._windows.calendar
        ends = open_ends(calendar, watermark, self._lateness)
        kept: list[tuple[CellId, CellState]] = []
        gone: list[CellId] = []
        for window, found in self._restored.items():
            days, end = self._span(window)
            if not days:
                gone.append(window)  # a length no longer configured
            elif end > ends[0]:
                # Ahead of the restored watermark: folded when the watermark reaches its last day (the days may
                # take deltas until then that only a fold brings in), its records sent again now.
                self._ahead[window] = found
                kept.append((window, self._fold(window, days, end, load, found)))
            else:
                # Its days are all still there: a daily cell outlives, by a day at least, every window stored that
                # holds it, and is dropped only by a watermark a whole batch reached (``DueCells.close``). Its
                # records are sent again even if it was final before the restored watermark: the batch that made it
                # final may have stored everything and sent nothing.
                self.cells[window] = self._fold(window, days, end, load, found)
                kept.append((window, self.cells[window]))
        self._restored = {}
        if ends == self._ends and not kept and not gone:
            return [], [], []
        changed = self._make_up_to(ends[0], load)
        for window in list(self._ahead):
            days, end = self._span(window)
            if end <= ends[0]:
                # Reached by the watermark, and not made from a day of its series: none is left, it is empty now.
                self._make(window, days, end, load)
                changed.append(window)
        self._open(ends)
        dropped = gone
        for window, state in list(self.cells.items()):
            days, end = self._span(window)
            if days and end in ends:
                continue
            if days and not state.final:
                state.final = True
                changed.append(window)
            elif not days or end < ends[-1] - 1:
                del self.cells[window]
                dropped.append(window)
        return [window for window in dict.fromkeys(changed) if window in self.cells], dropped, kept

    def _span(self, window: CellId) -> tuple[int, int]:
        """A window's days (0: a length no longer configured) and its end date (a day number)."""
        days = self._windows.trailing_days_of(window.size)
        return days, self._windows.calendar.day_number(window.start_ms) + days

    def _open(self, ends: list[int]) -> None:
        calendar = self._windows.calendar
        self._ends, self._last_end = ends, ends[0]
        self._spans = [(size, days, end, calendar.midnight(end - days)) for size, days in self._lengths
                       for end in ends]
        self._first_day = ends[-1] - self._windows.longest_trailing

    def _make_up_to(self, last: int, load: Callable[[CellId], CellState]) -> list[CellId]:
        """Make the windows of every series that end after the latest made and up to date ``last``."""
        calendar = self._windows.calendar
        made: list[CellId] = []
        for series, starts in self._days.items():
            family, channel, campaign, key = series
            held = [calendar.day_number(start) for start in starts]
            first = min(held) + 1 if self._last_end is None else self._last_end + 1
            for size, days in self._lengths:
                ends: set[int] = set()
                for day in held:
                    ends.update(range(max(day + 1, first), min(day + days, last) + 1))
                for end in ends:
                    window = CellId(family, size, calendar.midnight(end - days), channel, campaign, key)
                    if window not in self.cells:
                        self._make(window, days, end, load)
                        made.append(window)
        return made

    def _make(self, window: CellId, days: int, end: int, load: Callable[[CellId], CellState]) -> None:
        """Fold a window from its days; a window the table had keeps its records' revisions."""
        self.cells[window] = self._fold(window, days, end, load, self._ahead.pop(window, None))

    def _fold(self, window: CellId, days: int, end: int, load: Callable[[CellId], CellState],
              found: CellState | None) -> CellState:
        """The window folded from its days, with the revisions and finality of ``found`` (as the table had it)."""
        calendar = self._windows.calendar
        daily = []
        for start in self._days.get(series_of(window), ()):
            day = calendar.day_number(start)
            if covers(end, days, day):
                daily.append((day, load(CellId(window.family, DAY, start, window.channel, window.campaign,
                                               window.key))))
        state = fold(window.family, end, days, daily)
        if found is not None:
            state.emitted, state.final = found.emitted, found.final
        return state
