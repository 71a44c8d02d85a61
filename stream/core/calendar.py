"""Reporting calendars: which window of each size holds an instant, in the local time of a time zone.

A window size is an int code. A positive code is a clock duration in milliseconds: whole seconds that divide a
day (1s ... 1h, 2h, 3h, 4h, 6h, 8h, 12h, 24h) or whole days (2d, 7d ...). Calendar units have negative codes
(``WEEK``, ``MONTH``, ``QUARTER``, ``YEAR``); trailing windows of N whole local days have ``TRAILING - N``
(``stream.core.trailing``: they end at each local midnight, so they overlap and are no tumbling layout). Where the
tumbling windows start, in local time:

1. Sizes that divide an hour: whenever the local clock shows a multiple of the size, or jumps forward past
   one. A repeated hour on a fall-back night is two windows, a skipped hour none; Kolkata's hours start at
   :30 UTC. Where the clock neither shows nor skips a multiple at a change of offset, the window holding the
   change runs on to the next start: Lord Howe's hour of 01:00 lasts 90 minutes on its 30-minute fall-back.
2. Other sizes that divide a day (2h, 90m, 45m ..., and 1d): at each wall time ``00:00 + k * size`` of the
   local day.
3. Whole days N >= 2: at the local midnight of each date whose day number since 1970-01-01 is a multiple of N.
4. Weeks, months, quarters and years: at the local midnight of their first date.

Under rules 2 to 4 a window starts at the first instant the clock shows its wall time or jumps past it (a day
whose midnight does not exist starts at the jump) and lasts until the next one starts: New York's fall-back
day has 25 hours, a 2h slot of that night three. In UTC every positive size gives exactly ``ts - ts % size``,
the windows from before calendars existed.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import Enum
from functools import lru_cache, partial

from stream.core.timeutil import format_duration, format_rfc3339, parse_duration_ms

WEEK = -1
MONTH = -2
QUARTER = -3
YEAR = -4
# Trailing windows of N whole local days have the code TRAILING - N (see ``trailing_size``): never a calendar code.
TRAILING = -1000
# The longest trailing window accepted, in days: a leap year.
MAX_TRAILING_DAYS = 366

_SECOND = 1000
_MINUTE = 60_000
_HOUR = 3_600_000
_DAY = 86_400_000
_ONE_MS = timedelta(milliseconds=1)
_UNIT_CODES = {"w": WEEK, "mo": MONTH, "q": QUARTER, "y": YEAR}
_UNIT_LABELS = {code: f"1{unit}" for unit, code in _UNIT_CODES.items()}
_MONTHS_PER_UNIT = {MONTH: 1, QUARTER: 3, YEAR: 12}
_CALENDAR_UNIT = re.compile(r"^\s*(\d+)\s*(w|mo|q|y)\s*$")
_ACCEPTED = "use a duration that divides a day or is whole days (15m, 1h, 1d, 7d), or 1w, 1mo, 1q, 1y"
# The names zoneinfo knows for UTC itself: these format with Z, like timeutil.format_rfc3339.
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/Zulu", "Zulu", "Universal", "Etc/Universal", "Etc/UCT", "UCT"})
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The layout of every version before calendars: what state that names no calendar was made under.
UTC_IDENTITY = "UTC|monday"
# The Gregorian calendar repeats every 400 years, weekdays included (146097 days = 20871 weeks), and so do the
# zone rules after tzdata's last listed change (2087, Morocco's). Dates and offsets far ahead are computed 400-year
# cycles back, so that neither datetime (year 9999 at most) nor a zone +14:00 ahead of UTC overflows near the
# contract's last instant.
_CYCLE_DAYS = 146_097
_CYCLE_MS = _CYCLE_DAYS * _DAY
_CYCLES_FROM_MS = 10 * _CYCLE_MS  # year 5970: far past any listed change, far before datetime's limit
# One window per size is remembered; a worker uses a handful of sizes, so this only bounds a misuse.
_MEMO_SIZES = 64
# Window bounds repeat for every record of a window: their formatting is cached per calendar.
_FORMAT_CACHE = 8192


class _Rule(Enum):
    """How the windows of a size are laid out (the numbered rules of the module docstring)."""

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


def trailing_size(days: int) -> int:
    """The size code of the trailing windows of ``days`` whole local days.

    Raises:
        ValueError: for fewer than 2 days (a trailing day is the calendar's ``1d``) or more than a leap year.
    """
    if not 2 <= days <= MAX_TRAILING_DAYS:
        raise ValueError(f"a trailing window lasts 2 to {MAX_TRAILING_DAYS} days, not {days}")
    return TRAILING - days


def trailing_days(size: int) -> int:
    """How many days the trailing windows of a size code last; 0 for a calendar size."""
    return TRAILING - size if size <= TRAILING - 2 else 0


def parse_trailing(text: str) -> int:
    """Parse a trailing window length such as ``30d`` (or ``30``) into its number of days.

    Raises:
        ValueError: naming the text and what is accepted.
    """
    match = re.match(r"^\s*(\d+)\s*d?\s*$", text)
    if match is None:
        raise ValueError(f"{text!r} is not a trailing window length: use whole days such as 7d, 30d, 90d")
    days = int(match.group(1))
    trailing_size(days)  # checks the range
    return days


@lru_cache(maxsize=_MEMO_SIZES)
def size_label(size: int) -> str:
    """How a window size is written: ``1w``, ``1mo``, ``1q``, ``1y``, ``last30d`` for a trailing window, else as a
    duration (``15m``, ``1h``, ``7d``).

    Raises:
        ValueError: when ``size`` is no window size code.
    """
    if trailing_days(size):
        return f"last{trailing_days(size)}d"
    if _rule(size) is _Rule.UNIT:
        return _UNIT_LABELS[size]
    return format_duration(size)


def _load_zone(name: str) -> tzinfo:
    """The IANA time zone ``name``.

    Raises:
        ValueError: naming it and the closest valid names.
    """
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a folder of the database (``America``); ValueError: a name that is no relative path.
        pass
    names = {known.lower(): known for known in zoneinfo.available_timezones()}
    close = [names[match] for match in difflib.get_close_matches(name.lower(), names, n=3)]
    hint = f"did you mean {', '.join(close)}?" if close else "use an IANA name such as Europe/Paris"
    raise ValueError(f"unknown time zone {name!r}: {hint}")


def _offset_ms(offset: timedelta | None) -> int:
    """A UTC offset in milliseconds."""
    assert offset is not None, "a zoneinfo time zone always has an offset"
    return offset // _ONE_MS


def _cycles_back(ms: int) -> int:
    """How far back (a whole number of 400-year cycles) ``ms`` is taken before asking datetime or zoneinfo."""
    if ms < _CYCLES_FROM_MS:
        return 0
    return ((ms - _CYCLES_FROM_MS) // _CYCLE_MS + 1) * _CYCLE_MS


def _year_month(day: int) -> tuple[int, int]:
    """The year and month of a day number (days since 1970-01-01), for any day number."""
    cycles, day_in_cycle = divmod(day, _CYCLE_DAYS)
    moment = date.fromordinal(_EPOCH_ORDINAL + day_in_cycle)
    return moment.year + 400 * cycles, moment.month


def _first_day(year: int, month: int) -> int:
    """The day number of the first of a month, for any year."""
    cycles, years_in_cycle = divmod(year - 1970, 400)
    return date(1970 + years_in_cycle, month, 1).toordinal() - _EPOCH_ORDINAL + cycles * _CYCLE_DAYS


def _offset_at(zone: tzinfo, ts: int) -> int:
    """The zone's UTC offset (ms) at instant ``ts``."""
    back = _cycles_back(ts)
    return _offset_ms(datetime.fromtimestamp((ts - back) // _SECOND, tz=zone).utcoffset())


def _format_local(zone: tzinfo, ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 with the zone's offset at that instant.

    Raises:
        ValueError: when the local date is after 9999 (RFC 3339 has four-digit years).
    """
    offset = _offset_at(zone, ms)
    sign = "-" if offset < 0 else "+"
    # RFC 3339 offsets are whole minutes. Africa/Monrovia's -0:44:30 (until 1972, the last such offset in
    # tzdata) is written -00:44 with the local time moved to match, so that the text still names the instant.
    minutes = abs(offset) // _MINUTE
    try:
        local = _UTC_EPOCH + timedelta(seconds=ms // _SECOND, minutes=-minutes if sign == "-" else minutes)
    except OverflowError:
        raise ValueError(f"{ms} ms is after the year 9999 in {zone}, which RFC 3339 cannot write") from None
    hours, minutes = divmod(minutes, 60)
    fraction = f".{ms % _SECOND:03d}" if ms % _SECOND else ""
    return f"{local.strftime('%Y-%m-%dT%H:%M:%S')}{fraction}{sign}{hours:02d}:{minutes:02d}"


class Calendar:
    """Where the windows of each size begin and end in one reporting time zone (long-lived: one per worker)."""

    def __init__(self, zone: str = "UTC", week_start: int = 0) -> None:
        """Create the calendar of an IANA time zone.

        Args:
            zone: an IANA time zone name (``Europe/Paris``, ``America/New_York``, ``UTC``).
            week_start: the first day of a week, 0 = Monday ... 6 = Sunday.

        Raises:
            ValueError: for an unknown zone (naming the closest valid ones) or a week start outside 0..6.
        """
        if not 0 <= week_start <= 6:
            raise ValueError(f"week_start must be 0 (Monday) ... 6 (Sunday), not {week_start}")
        self.zone_name = zone
        self.week_start = week_start
        self._zone = _load_zone(zone)
        self._is_utc = zone in _UTC_NAMES
        # Aware datetime arithmetic is wall-clock arithmetic: this plus a timedelta is a local wall time.
        self._local_epoch = datetime(1970, 1, 1, tzinfo=self._zone)
        # Per size, the last window computed: most events fall in the current window of each size.
        self._last: dict[int, tuple[int, int]] = {}
        self._format: Callable[[int], str] = (
            format_rfc3339 if self._is_utc else lru_cache(maxsize=_FORMAT_CACHE)(partial(_format_local, self._zone)))

    def __repr__(self) -> str:
        return f"Calendar({self.zone_name!r}, week_start={self.week_start})"

    @property
    def identity(self) -> str:
        """What the windows' layout depends on, as state records it: ``America/New_York|monday``."""
        return f"{self.zone_name}|{_WEEKDAYS[self.week_start]}"

    def start(self, ts_ms: int, size: int) -> int:
        """Start (epoch ms) of the window of ``size`` that holds ``ts_ms``.

        Raises:
            ValueError: when ``size`` is no window size code.
        """
        last = self._last.get(size)
        if last is not None and last[0] <= ts_ms < last[1]:
            return last[0]
        return self._remember(size, self._compute(ts_ms, size))[0]

    def end(self, start_ms: int, size: int) -> int:
        """Exclusive end of the window of ``size`` that starts at ``start_ms`` (the start of the next one).

        For an instant that is no window start, the end of the window that holds it.
        """
        last = self._last.get(size)
        if last is not None and last[0] == start_ms:
            return last[1]
        days = trailing_days(size)
        if days:
            return self.midnight(self.day_number(start_ms) + days)
        return self.window(start_ms, size)[1]

    def window(self, ts_ms: int, size: int) -> tuple[int, int]:
        """Start and exclusive end (epoch ms) of the window of ``size`` that holds ``ts_ms``."""
        last = self._last.get(size)
        if last is not None and last[0] <= ts_ms < last[1]:
            return last
        return self._remember(size, self._compute(ts_ms, size))

    def earliest_end(self, ts_ms: int, sizes: tuple[int, ...]) -> int:
        """The soonest end among the windows (one per size) that hold ``ts_ms``."""
        # A plain loop rather than min() over a generator: called for every event, it is a third faster.
        earliest = self.window(ts_ms, sizes[0])[1]
        for size in sizes[1:]:
            end = self.window(ts_ms, size)[1]
            if end < earliest:
                earliest = end
        return earliest

    def day_number(self, ts_ms: int) -> int:
        """The local date of instant ``ts_ms`` as a day number (days since the local 1970-01-01)."""
        if self._is_utc:
            return ts_ms // _DAY
        return (ts_ms + self._offset(ts_ms)) // _DAY

    def midnight(self, day: int) -> int:
        """The first instant of local date ``day`` (a day number): its midnight, or the jump past a skipped one."""
        if self._is_utc:
            return day * _DAY
        return self._first_instant(day * _DAY)

    def format(self, ms: int) -> str:
        """Format epoch ms as RFC 3339 in this zone (``2026-11-01T00:00:00-04:00``; ``Z`` when the zone is UTC)."""
        return self._format(ms)

    def label(self, size: int) -> str:
        """How a window size is written (``1h``, ``1d``, ``1mo``)."""
        return size_label(size)

    # ------------------------------------------------------------------ computing a window

    def _remember(self, size: int, window: tuple[int, int]) -> tuple[int, int]:
        if len(self._last) >= _MEMO_SIZES and size not in self._last:
            self._last.clear()
        self._last[size] = window
        return window

    def _compute(self, ts: int, size: int) -> tuple[int, int]:
        rule = _rule(size)
        if self._is_utc and rule is not _Rule.UNIT:
            # Every rule gives the epoch-aligned windows in UTC; computed here the way they always were.
            start = ts - ts % size
            return start, start + size
        if rule is _Rule.CLOCK:
            return self._clock_window(ts, size)
        return self._wall_window(ts, size)

    def _offset(self, ts: int) -> int:
        """The zone's UTC offset (ms) at instant ``ts``."""
        return _offset_at(self._zone, ts)

    def _first_instant(self, wall: int) -> int:
        """The first instant at which the local clock shows ``wall`` or jumps past it.

        Args:
            wall: a local wall time as milliseconds since the local 1970-01-01T00:00.
        """
        back = _cycles_back(wall)
        local = self._local_epoch + timedelta(milliseconds=wall - back)
        before = _offset_ms(local.utcoffset())  # fold=0: the offset before a change
        after = _offset_ms(local.replace(fold=1).utcoffset())
        if before >= after:
            # Shown once, or twice after a fall-back: fold=0 is the first time.
            return wall - before
        # Skipped by a jump forward. fold=0 would give wall - before, an instant after the jump that shows a
        # later time (03:15 for a skipped 02:15); the jump itself is wanted, the first instant past ``wall``.
        low, high = wall - back - after, wall - back - before  # the clock shows less than wall at low, more at high
        while high - low > 1:
            middle = (low + high) // 2
            if middle + self._offset(middle) >= wall - back:
                high = middle
            else:
                low = middle
        return high + back

    def _wall_window(self, ts: int, size: int) -> tuple[int, int]:
        """The window of ``ts`` under rules 2 to 4: [greatest window start <= ts, next window start)."""
        wall = self._wall_floor(ts + self._offset(ts), size)
        start = self._first_instant(wall)
        following = self._wall_next(wall, size)
        end = self._first_instant(following)
        # After a fall-back the clock shows some wall times twice; a later window that began at their first
        # showing already holds ts (NY 2026-11-01 at 01:10 EST: the 90m slot of 01:30 EDT, not that of 00:00).
        while end <= ts:
            start, wall = end, following
            following = self._wall_next(wall, size)
            end = self._first_instant(following)
        return start, end

    def _wall_floor(self, wall: int, size: int) -> int:
        """The first wall time of the window whose wall times hold ``wall``."""
        day = wall // _DAY
        if size > 0 and _DAY % size == 0:
            return wall - wall % size
        if size > 0:
            return (day - day % (size // _DAY)) * _DAY
        if size == WEEK:
            return (day - (day + _EPOCH_WEEKDAY - self.week_start) % 7) * _DAY
        year, month = _year_month(day)
        return _first_day(year, month - (month - 1) % _MONTHS_PER_UNIT[size]) * _DAY

    def _wall_next(self, wall: int, size: int) -> int:
        """The first wall time of the window after the one that starts at wall time ``wall``."""
        if size > 0:
            return wall + size
        if size == WEEK:
            return wall + 7 * _DAY
        year, month = _year_month(wall // _DAY)
        year, month_index = divmod(year * 12 + month - 1 + _MONTHS_PER_UNIT[size], 12)
        return _first_day(year, month_index + 1) * _DAY

    def _clock_window(self, ts: int, size: int) -> tuple[int, int]:
        """The window of ``ts`` under rule 1 (sizes that divide an hour)."""
        offset = self._offset(ts)
        start = ts - (ts + offset) % size
        end = start + size
        if self._offset(start) == offset == self._offset(end):
            return start, end
        return self._clock_start(ts, size), self._clock_next(ts, size)

    def _clock_start(self, ts: int, size: int) -> int:
        """The greatest rule-1 window start <= ``ts``."""
        while True:
            offset = self._offset(ts)
            start = ts - (ts + offset) % size
            if self._offset(start) == offset:
                return start
            change = self._change_in(start, ts)
            if self._clock_starts_at(change, size):
                return change
            ts = change - 1

    def _clock_next(self, ts: int, size: int) -> int:
        """The least rule-1 window start > ``ts``."""
        while True:
            offset = self._offset(ts)
            end = ts + size - (ts + offset) % size
            if self._offset(end) == offset:
                return end
            change = self._change_in(ts, end)
            if self._clock_starts_at(change, size):
                return change
            ts = change

    def _clock_starts_at(self, change: int, size: int) -> bool:
        """Whether a rule-1 window starts at a change of offset: the clock shows a multiple of size or skips one."""
        before, after = self._offset(change - 1), self._offset(change)
        shown = change + after
        skipped_from = change + before  # a jump forward skips the wall times [skipped_from, shown)
        return shown % size == 0 or (before < after and skipped_from <= shown - shown % size)

    def _change_in(self, low: int, high: int) -> int:
        """The instant in (low, high] at which the offset changes, given that it differs at low and at high.

        tzdata's changes of offset are days apart (six at least since 1970) and these spans an hour at most,
        so there is exactly one.
        """
        offset = self._offset(high)
        while high - low > 1:
            middle = (low + high) // 2
            if self._offset(middle) == offset:
                high = middle
            else:
                low = middle
        return high
