"""The window sizes in force and the calendar that lays them out: what the stages ask of event time.

A cell is identified by its window's size code and start instant (``stream.core.cells.CellId``); everything
else about a window (where it ends, how its bounds and size are written, which zone they are in) comes from
here, so that one setting (``KPI_TIMEZONE``) moves every window of every stage together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from stream.core.calendar import MONTH, QUARTER, WEEK, YEAR, Calendar, trailing_days, trailing_size

_DAY = 86_400_000
DAY = _DAY  # the size code of 1d: what trailing windows are folded from
# The longest each calendar unit lasts (a 25-hour day aside): orders sizes and bounds how long a final cell is kept.
_NOMINAL_MS = {WEEK: 7 * _DAY, MONTH: 31 * _DAY, QUARTER: 92 * _DAY, YEAR: 366 * _DAY}


def nominal_ms(size: int) -> int:
    """The longest a window of ``size`` lasts, about: its duration, or 7, 31, 92, 366 days for a calendar unit."""
    if size > 0:
        return size
    days = trailing_days(size)
    return days * _DAY if days else _NOMINAL_MS[size]


@dataclass(frozen=True, slots=True)
class Windows:
    """The configured window sizes, shortest first, the reporting calendar they are laid out in, and the lengths
    (days, shortest first) of the trailing windows folded from the daily ones (``stream.core.trailing``)."""

    sizes: tuple[int, ...]
    calendar: Calendar
    trailing: tuple[int, ...] = ()

    @staticmethod
    def of(sizes: tuple[int, ...], calendar: Calendar, trailing: tuple[int, ...] = ()) -> Windows:
        """The sizes ordered shortest first (the first is the one the conversion-time histogram reads).

        Raises:
            ValueError: trailing windows without ``1d`` among the sizes (they are folded from the days).
        """
        if trailing and DAY not in sizes:
            raise ValueError("trailing windows are folded from the daily windows: add 1d to the window sizes")
        for days in trailing:
            trailing_size(days)  # checks the range
        return Windows(tuple(sorted(set(sizes), key=nominal_ms)), calendar, tuple(sorted(set(trailing))))

    @property
    def trailing_sizes(self) -> tuple[int, ...]:
        """The size codes of the trailing windows, shortest first."""
        return tuple(trailing_size(days) for days in self.trailing)

    def trailing_days_of(self, size: int) -> int:
        """The days of a trailing window size in force; 0 for any other size."""
        days = trailing_days(size)
        return days if days in self.trailing else 0

    @property
    def longest_trailing(self) -> int:
        """The longest trailing window's days (0: none)."""
        return self.trailing[-1] if self.trailing else 0

    @property
    def day_kept_ms(self) -> int:
        """How long after its end a day is still folded into trailing windows, so kept: the longest one's days,
        plus one (a day of a time zone may last 25 hours); 0 without trailing windows."""
        return (self.trailing[-1] + 1) * _DAY if self.trailing else 0

    def starts(self, ts_ms: int) -> tuple[tuple[int, int], ...]:
        """(size, start) of the window of each size that holds ``ts_ms``."""
        start = self.calendar.start
        return tuple([(size, start(ts_ms, size)) for size in self.sizes])

    def end(self, size: int, start_ms: int) -> int:
        """Exclusive end of the window of ``size`` that starts at ``start_ms``."""
        return self.calendar.end(start_ms, size)

    def earliest_end(self, ts_ms: int) -> int:
        """The soonest end among the windows that hold ``ts_ms``: an event is late once that window closed."""
        return self.calendar.earliest_end(ts_ms, self.sizes)

    def describe(self, size: int, start_ms: int) -> dict[str, str]:
        """A KPI record's ``window``: size, bounds in RFC 3339 with the zone's offset, the zone, and its kind.

        Every record of a window shares the one dict (made once, remembered): the records are serialised as they
        are, never changed.
        """
        return _described(self.calendar, size, start_ms)

    def key_part(self, size: int, start_ms: int) -> str:
        """The window's part of a KPI record key: ``1h|2026-11-22T08:00:00Z`` (the start with its offset, so the
        two repeated hours of a fall-back night differ); ``last30d|…`` for a trailing window."""
        calendar = self.calendar
        return f"{calendar.label(size)}|{calendar.format(start_ms)}"


@lru_cache(maxsize=8192)
def _described(calendar: Calendar, size: int, start_ms: int) -> dict[str, str]:
    days = trailing_days(size)
    return {"size": f"{days}d" if days else calendar.label(size), "start": calendar.format(start_ms),
            "end": calendar.format(calendar.end(start_ms, size)), "zone": calendar.zone_name,
            "kind": "trailing" if days else "calendar"}


def utc_windows(sizes: tuple[int, ...]) -> Windows:
    """The windows of earlier versions: UTC, the given sizes."""
    return Windows.of(sizes, Calendar("UTC"))
