"""The window sizes in force and the calendar that lays them out: what the stages ask of event time.

A cell is identified by its window's size code and start instant (``stream.core.cells.CellId``); everything
else about a window (where it ends, how its bounds and size are written, which zone they are in) comes from
here, so that one setting (``KPI_TIMEZONE``) moves every window of every stage together.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.calendar import MONTH, QUARTER, WEEK, YEAR, Calendar

_DAY = 86_400_000
# The longest each calendar unit lasts (a 25-hour day aside): orders sizes and bounds how long a final cell is kept.
_NOMINAL_MS = {WEEK: 7 * _DAY, MONTH: 31 * _DAY, QUARTER: 92 * _DAY, YEAR: 366 * _DAY}


def nominal_ms(size: int) -> int:
    """The longest a window of ``size`` lasts, about: its duration, or 7, 31, 92, 366 days for a calendar unit."""
    return size if size > 0 else _NOMINAL_MS[size]


@dataclass(frozen=True, slots=True)
class Windows:
    """The configured window sizes, shortest first, and the reporting calendar they are laid out in."""

    sizes: tuple[int, ...]
    calendar: Calendar

    @staticmethod
    def of(sizes: tuple[int, ...], calendar: Calendar) -> Windows:
        """The sizes ordered shortest first (the first is the one the conversion-time histogram reads)."""
        return Windows(tuple(sorted(set(sizes), key=nominal_ms)), calendar)

    def starts(self, ts_ms: int) -> list[tuple[int, int]]:
        """(size, start) of the window of each size that holds ``ts_ms``."""
        start = self.calendar.start
        return [(size, start(ts_ms, size)) for size in self.sizes]

    def end(self, size: int, start_ms: int) -> int:
        """Exclusive end of the window of ``size`` that starts at ``start_ms``."""
        return self.calendar.end(start_ms, size)

    def earliest_end(self, ts_ms: int) -> int:
        """The soonest end among the windows that hold ``ts_ms``: an event is late once that window closed."""
        return self.calendar.earliest_end(ts_ms, self.sizes)

    def describe(self, size: int, start_ms: int) -> dict[str, str]:
        """A KPI record's ``window``: size, bounds in RFC 3339 with the zone's offset, the zone, and its kind."""
        calendar = self.calendar
        return {"size": calendar.label(size), "start": calendar.format(start_ms),
                "end": calendar.format(calendar.end(start_ms, size)), "zone": calendar.zone_name,
                "kind": "calendar"}

    def key_part(self, size: int, start_ms: int) -> str:
        """The window's part of a KPI record key: ``1h|2026-11-22T08:00:00Z`` (the start with its offset, so the
        two repeated hours of a fall-back night differ)."""
        calendar = self.calendar
        return f"{calendar.label(size)}|{calendar.format(start_ms)}"


def utc_windows(sizes: tuple[int, ...]) -> Windows:
    """The windows of earlier versions: UTC, the given sizes."""
    return Windows.of(sizes, Calendar("UTC"))
