"""How often a cell's KPI records go out (``KPI_RECORD_INTERVAL``): a cell's first change after a quiet interval at
once, its later changes together once the interval since its last records has passed, and a final cell's at once.

A busy cell (the all-traffic roll-up of the current hour takes a delta from nearly every page view) changes in
almost every batch; sending every revision cost most of the live worker's sends. Its state is still written every
batch, so a restart loses nothing: the cells it restores have their records compared with their state again
(``CellStage``), and whatever waited goes out then.
"""

from __future__ import annotations

from collections import deque

from stream.core.cells import CellId


class RecordPace:
    """The cells of one cell partition whose records went out less than ``interval_ms`` ago (processing time), and
    those of them with a change waiting.

    Args:
        interval_ms: the least time between two sends of a cell's records; 0 sends every change at once.
    """

    def __init__(self, interval_ms: int) -> None:
        self._interval = interval_ms
        self._until: dict[CellId, int] = {}  # held cell -> when its hold ends
        self._ends: deque[tuple[int, CellId]] = deque()  # the holds in the order they end (a clock going back aside)
        self._waiting: set[CellId] = set()

    def due(self, now_ms: int) -> list[CellId]:
        """End the holds that are over by ``now_ms``; returns the cells among them with a change waiting."""
        ends, until, waiting = self._ends, self._until, self._waiting
        ready: list[CellId] = []
        while ends and ends[0][0] <= now_ms:
            end, cell = ends.popleft()
            if until.get(cell) == end:  # not held again since
                del until[cell]
                if cell in waiting:
                    waiting.discard(cell)
                    ready.append(cell)
        return ready

    def holds(self, cell: CellId, now_ms: int) -> bool:
        """Whether a changed cell's records wait (they went out less than the interval ago); if so the change is
        noted, and ``due`` returns the cell once the hold is over. Call ``due`` first in a batch."""
        end = self._until.get(cell)
        if end is None:
            return False
        if end - now_ms > self._interval:  # the clock went back: the hold would outlast the interval
            del self._until[cell]
            return False
        self._waiting.add(cell)
        return True

    def sent(self, cell: CellId, now_ms: int) -> None:
        """The cell's records went out at ``now_ms``: hold its next changes for the interval."""
        self._waiting.discard(cell)
        if self._interval:
            end = now_ms + self._interval
            self._until[cell] = end
            self._ends.append((end, cell))

    def forget(self, cell: CellId) -> None:
        """The cell is gone (dropped): nothing of it waits."""
        self._until.pop(cell, None)
        self._waiting.discard(cell)

    def waiting(self) -> int:
        """How many cells have a change waiting."""
        return len(self._waiting)
