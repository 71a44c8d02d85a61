"""Where a window is closed: the rule, and which cells a watermark closes and drops."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stream.core.cells import CellId
from stream.core.windows import Windows, nominal_ms


def is_closed(window_end: int, watermark: int | None, allowed_lateness_ms: int) -> bool:
    """A window is final once the watermark has passed its end plus the allowed lateness."""
    return watermark is not None and window_end + allowed_lateness_ms <= watermark


def is_late(ts: int, watermark: int | None, windows: Windows, allowed_lateness_ms: int) -> bool:
    """Whether an event at ``ts`` comes too late: the first of its windows to end is closed already."""
    return is_closed(windows.earliest_end(ts), watermark, allowed_lateness_ms)


def closing(open_cells: Iterable[CellId], final_cells: Iterable[CellId], watermark: int,
            closes_at: Callable[[CellId], int], allowed_lateness_ms: int) -> tuple[list[CellId], list[CellId]]:
    """The open cells ``watermark`` closes (they become final), and the final cells it drops: a final cell is kept
    one more window length after it closed, then nothing can change it any more.

    Args:
        closes_at: when a cell's window ends for closing (its end, plus a cohort's conversion window).
    """
    closed = [cell for cell in open_cells if is_closed(closes_at(cell), watermark, allowed_lateness_ms)]
    dropped = [cell for cell in final_cells
               if is_closed(closes_at(cell) + nominal_ms(cell.size), watermark, allowed_lateness_ms)]
    return closed, dropped
