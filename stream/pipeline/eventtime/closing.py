"""Where a window is closed: the rule, which cells a watermark closes and drops, and the cell partition's open and
final cells indexed by when that happens (``DueCells``)."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from stream.core.cells import CellId
from stream.core.windows import Windows, nominal_ms


def is_closed(window_end: int, watermark: int | None, allowed_lateness_ms: int) -> bool:
    """A window is final once the watermark has passed its end plus the allowed lateness."""
    return watermark is not None and window_end + allowed_lateness_ms <= watermark


def is_late(ts: int, watermark: int | None, windows: Windows, allowed_lateness_ms: int) -> bool:
    """Whether an event at ``ts`` comes too late: the first of its windows to end is closed already."""
    return is_closed(windows.earliest_end(ts), watermark, allowed_lateness_ms)


class DueCells:
    """A cell partition's open and final cells, indexed by when the watermark closes and then drops each, so that
    a batch's closing looks only at the cells that are due, not at every cell.

    Args:
        closes_at: when a cell's window ends for closing (its end, plus a cohort's conversion window).
        allowed_lateness_ms: how long after that the watermark closes it.
        kept_for: how long a final cell is kept after that (one window length; a day, longer while trailing windows
            are folded from it).
    """

    def __init__(self, closes_at: Callable[[CellId], int], allowed_lateness_ms: int,
                 kept_for: Callable[[CellId], int] = lambda cell: nominal_ms(cell.size)) -> None:
        self._closes_at, self._lateness, self._kept_for = closes_at, allowed_lateness_ms, kept_for
        self.open: set[CellId] = set()
        self.final: set[CellId] = set()
        # Due time -> the cells due then, and a heap of the due times. A cell leaves its set before its due time
        # only when dropped from ``final`` (``discard_final``): a due cell no longer in its set is passed over.
        self._open_due: dict[int, list[CellId]] = {}
        self._open_times: list[int] = []
        self._final_due: dict[int, list[CellId]] = {}
        self._final_times: list[int] = []

    def known(self, cell: CellId) -> bool:
        """Whether the cell exists (open, or final and not yet dropped)."""
        return cell in self.open or cell in self.final

    def add_open(self, cell: CellId) -> None:
        """A cell now open (new, or found open in the table)."""
        self.open.add(cell)
        _file(self._open_due, self._open_times, self._closes_at(cell), cell)

    def add_final(self, cell: CellId) -> None:
        """A cell now final (closed by this index, or found final in the table)."""
        self.final.add(cell)
        _file(self._final_due, self._final_times, self._closes_at(cell) + self._kept_for(cell), cell)

    def discard_final(self, cell: CellId) -> None:
        """A final cell dropped."""
        self.final.discard(cell)

    def close(self, watermark: int, drop_watermark: int | None) -> tuple[list[CellId], list[CellId]]:
        """The open cells ``watermark`` closes (their window's end plus the lateness passed) and the final cells it
        drops: a final cell is kept one more window length (``kept_for``), then nothing can change it any more.
        The closed ones move to ``final``; the dropped ones stay there for the caller to ``discard_final``. Only
        cells final before this call are dropped, so each one's final record has gone out.

        ``drop_watermark`` is the one that drops (None: none is dropped). The cell stage gives the watermark its
        table held before the batch: a cell is then dropped only once a batch whose writes all reached the table
        passed its keeping, so that a restart in the middle of the batch still finds every day a trailing window
        open at the restored watermark is folded from (``stream.pipeline.trailing``)."""
        dropped = [] if drop_watermark is None else [
            cell for cell in _due(self._final_due, self._final_times, drop_watermark - self._lateness)
            if cell in self.final]
        closed = [cell for cell in _due(self._open_due, self._open_times, watermark - self._lateness)
                  if cell in self.open]
        for cell in closed:
            self.open.discard(cell)
            self.add_final(cell)
        return closed, dropped


def _file(due: dict[int, list[CellId]], times: list[int], at: int, cell: CellId) -> None:
    cells = due.get(at)
    if cells is None:
        due[at] = cells = []
        heapq.heappush(times, at)
    cells.append(cell)


def _due(due: dict[int, list[CellId]], times: list[int], until: int) -> list[CellId]:
    """The cells filed at or before ``until``, taken out of the index."""
    taken: list[CellId] = []
    while times and times[0] <= until:
        taken += due.pop(heapq.heappop(times))
    return taken
