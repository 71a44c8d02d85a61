"""Window sizes of reporting calendars: int codes for clock durations and calendar units.

A positive code is a clock duration in milliseconds: whole seconds that divide a day (1s ... 1h, 2h, 3h, 4h,
6h, 8h, 12h, 24h) or whole days (2d, 7d ...). Calendar units have negative codes (``WEEK``, ``MONTH``,
``QUARTER``, ``YEAR``): codes travel as ints in compact internal messages.
"""

from __future__ import annotations

import re
from enum import Enum

from stream.core.timeutil import format_duration, parse_duration_ms

WEEK = -1
MONTH = -2
QUARTER = -3
YEAR = -4

_SECOND = 1000
_HOUR = 3_600_000
_DAY = 86_400_000
_UNIT_CODES = {"w": WEEK, "mo": MONTH, "q": QUARTER, "y": YEAR}
_UNIT_LABELS = {code: f"1{unit}" for unit, code in _UNIT_CODES.items()}
_CALENDAR_UNIT = re.compile(r"^\s*(\d+)\s*(w|mo|q|y)\s*$")
_ACCEPTED = "use a duration that divides a day or is whole days (15m, 1h, 1d, 7d), or 1w, 1mo, 1q, 1y"


class _Rule(Enum):
    """How the windows of a size are laid out (clock durations, slots of a day, whole days, calendar units)."""

    CLOCK = 1
    SLOT = 2
    DAYS = 3
    UNIT = 4


def _rule(size: int) -> _Rule:
    """The rule of a window size code.

    Raises:
        ValueError: when ``size`` is no window size code.
    """
    if size in _UNIT_LABELS:
        return _Rule.UNIT
    if size > 0 and size % _SECOND == 0:
        if _HOUR % size == 0:
            return _Rule.CLOCK
        if _DAY % size == 0:
            return _Rule.SLOT
        if size % _DAY == 0:
            return _Rule.DAYS
    raise ValueError(f"{size} is not a window size code: whole seconds that divide a day, whole days, "
                     f"or WEEK ({WEEK}), MONTH ({MONTH}), QUARTER ({QUARTER}), YEAR ({YEAR})")


def parse_window_size(text: str) -> int:
    """Parse a window size such as ``15m``, ``1h``, ``1d``, ``7d``, ``1w``, ``1mo``, ``1q`` or ``1y`` into its code.

    Raises:
        ValueError: naming the text and what is accepted.
    """
    unit = _CALENDAR_UNIT.match(text)
    if unit is not None:
        if int(unit.group(1)) != 1:
            raise ValueError(f"{text!r} is not a window size: weeks, months, quarters and years come one at a "
                             "time (1w, 1mo, 1q, 1y); longer spans are whole days (14d)")
        return _UNIT_CODES[unit.group(2)]
    try:
        size = parse_duration_ms(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a window size: {_ACCEPTED}") from None
    if size % _SECOND:
        raise ValueError(f"{text!r} is not a window size: not a whole number of seconds; {_ACCEPTED}")
    if _DAY % size and size % _DAY:
        raise ValueError(f"{text!r} is not a window size: neither divides a day nor is whole days; {_ACCEPTED}")
    return size


def size_label(size: int) -> str:
    """How a window size is written: ``1w``, ``1mo``, ``1q``, ``1y``, else as a duration (``15m``, ``1h``, ``7d``).

    Raises:
        ValueError: when ``size`` is no window size code.
    """
    if _rule(size) is _Rule.UNIT:
        return _UNIT_LABELS[size]
    return format_duration(size)
