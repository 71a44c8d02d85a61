"""Tests for stream.core.calendar: window size codes, and windows in local time across daylight saving.

Expected instants are written as UTC wall times (``calendar.timegm``) or as local RFC 3339 text read back
with ``timeutil.parse_event_time``, never computed with the functions under test. The properties run in
zones with the awkward cases: a 30-minute shift (Lord_Howe), a +12:45 zone changing at 02:45 (Chatham),
midnight skipped (Santiago), no daylight saving at +05:30 (Kolkata).
"""

import calendar
from datetime import date, datetime
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.calendar import MONTH, QUARTER, WEEK, YEAR, Calendar, parse_window_size, size_label
from stream.core.timeutil import MAX_EPOCH_MS, earliest_window_end, format_rfc3339, parse_event_time

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NY = "America/New_York"
KOLKATA = "Asia/Kolkata"


def utc_ms(year, month, day, hour=0, minute=0, second=0, millis=0):
    """Epoch milliseconds of a UTC wall-clock time, by integer calendar arithmetic."""
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * 1000 + millis


T0 = utc_ms(2026, 11, 22, 8, 15)  # a Sunday: 03:15 in New York, 13:45 in Kolkata
T1970 = 0
T2100 = utc_ms(2100, 1, 1)
# Every positive size code: whole seconds dividing a day (96 of them, 1s ... 1d), and whole days.
SECONDS_DIVIDING_A_DAY = tuple(s * SECOND for s in range(1, 86_401) if 86_400 % s == 0)
POSITIVE_SIZES = st.one_of(st.sampled_from(SECONDS_DIVIDING_A_DAY),
                           st.integers(min_value=2, max_value=MAX_EPOCH_MS // DAY + 1).map(lambda n: n * DAY))


# ------------------------------------------------------------------ size codes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1s", SECOND),
        ("15m", 15 * MINUTE),
        ("45m", 45 * MINUTE),
        ("1h", HOUR),
        ("90m", 90 * MINUTE),
        ("2h", 2 * HOUR),
        ("24h", DAY),
        ("1d", DAY),
        ("7d", 7 * DAY),
        (" 2 d ", 2 * DAY),
        ("86400000ms", DAY),
        ("1w", WEEK),
        ("1mo", MONTH),
        ("1q", QUARTER),
        ("1y", YEAR),
        (" 1 mo ", MONTH),
    ],
    ids=["1s", "15m", "45m-divides-a-day", "1h", "90m", "2h", "24h", "1d", "7d", "spaces", "ms", "week", "month",
         "quarter", "year", "unit-with-spaces"],
)
def test_parse_window_size(text, size):
    assert parse_window_size(text) == size


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("5x", "use a duration that divides a day or is whole days (15m, 1h, 1d, 7d), or 1w, 1mo, 1q, 1y"),
        ("", "use a duration"),
        ("1.5h", "use a duration"),
        ("0s", "use a duration"),
        ("1M", "use a duration"),
        ("500ms", "not a whole number of seconds"),
        ("7m", "neither divides a day nor is whole days"),
        ("36h", "neither divides a day nor is whole days"),
        ("2mo", "one at a time (1w, 1mo, 1q, 1y)"),
        ("2w", "longer spans are whole days (14d)"),
        ("0y", "one at a time"),
    ],
    ids=["unknown-unit", "empty", "fraction", "zero", "upper-case-m", "sub-second", "7m", "36h", "2mo", "2w", "0y"],
)
def test_parse_window_size_rejects_naming_the_text_and_what_is_accepted(text, reason):
    with pytest.raises(ValueError) as refused:
        parse_window_size(text)
    assert str(refused.value).startswith(f"{text!r} is not a window size: ")
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("size", "label"),
    [(WEEK, "1w"), (MONTH, "1mo"), (QUARTER, "1q"), (YEAR, "1y"), (SECOND, "1s"), (5 * MINUTE, "5m"),
     (90 * MINUTE, "90m"), (HOUR, "1h"), (DAY, "1d"), (7 * DAY, "7d")],
    ids=["week", "month", "quarter", "year", "1s", "5m", "90m", "1h", "1d", "7d"],
)
def test_size_label(size, label):
    assert size_label(size) == label
    assert Calendar(NY).label(size) == label


@pytest.mark.parametrize("size", [0, -5, 7 * MINUTE, 500, 36 * HOUR], ids=["zero", "-5", "7m", "500ms", "36h"])
def test_sizes_that_are_no_window_size_code_are_refused(size):
    with pytest.raises(ValueError, match="is not a window size code"):
        size_label(size)
    for zone in ("UTC", NY):
        with pytest.raises(ValueError, match="is not a window size code"):
            Calendar(zone).start(T0, size)


@given(st.one_of(POSITIVE_SIZES, st.sampled_from([WEEK, MONTH, QUARTER, YEAR])))
def test_size_label_then_parse_round_trips(size):
    assert parse_window_size(size_label(size)) == size


# ------------------------------------------------------------------ the calendar itself


@pytest.mark.parametrize(
    ("zone", "hint"),
    [("Europe/Londn", "Europe/London"), ("america/new_york", "America/New_York"), ("America", "America/"),
     ("", "use an IANA name"), ("../etc/passwd", "")],
    ids=["typo", "lower-case", "a-folder", "empty", "not-a-relative-path"],
)
def test_unknown_zone_is_refused_naming_it_and_the_closest_names(zone, hint):
    with pytest.raises(ValueError) as refused:
        Calendar(zone)
    assert str(refused.value).startswith(f"unknown time zone {zone!r}: ")
    assert hint in str(refused.value)


@pytest.mark.parametrize("week_start", [-1, 7])
def test_week_start_outside_monday_to_sunday_is_refused(week_start):
    with pytest.raises(ValueError, match="week_start"):
        Calendar(NY, week_start)


def test_defaults_and_attributes():
    assert (Calendar().zone_name, Calendar().week_start) == ("UTC", 0)
    assert (Calendar(KOLKATA, 6).zone_name, Calendar(KOLKATA, 6).week_start) == (KOLKATA, 6)


# ------------------------------------------------------------- windows, as UTC instants


@pytest.mark.parametrize(
    ("zone", "size", "ts", "start", "end"),
    [
        # New York falls back at 06:00Z on 2026-11-01: 01:00-02:00 is shown twice, as EDT then EST.
        (NY, HOUR, utc_ms(2026, 11, 1, 5, 30), utc_ms(2026, 11, 1, 5), utc_ms(2026, 11, 1, 6)),
        (NY, HOUR, utc_ms(2026, 11, 1, 6, 30), utc_ms(2026, 11, 1, 6), utc_ms(2026, 11, 1, 7)),
        (NY, 15 * MINUTE, utc_ms(2026, 11, 1, 6, 10), utc_ms(2026, 11, 1, 6), utc_ms(2026, 11, 1, 6, 15)),
        (NY, DAY, utc_ms(2026, 11, 1, 12), utc_ms(2026, 11, 1, 4), utc_ms(2026, 11, 2, 5)),
        (NY, DAY, utc_ms(2026, 11, 2, 4, 59), utc_ms(2026, 11, 1, 4), utc_ms(2026, 11, 2, 5)),
        (NY, 2 * HOUR, utc_ms(2026, 11, 1, 6, 30), utc_ms(2026, 11, 1, 4), utc_ms(2026, 11, 1, 7)),
        # 01:10 EST: the 90m slot of 01:30 began at 01:30 EDT, before it (the slot of 00:00 ended then).
        (NY, 90 * MINUTE, utc_ms(2026, 11, 1, 6, 10), utc_ms(2026, 11, 1, 5, 30), utc_ms(2026, 11, 1, 8)),
        # New York springs forward at 07:00Z on 2026-03-08: 02:00-03:00 is never shown.
        (NY, HOUR, utc_ms(2026, 3, 8, 6, 59), utc_ms(2026, 3, 8, 6), utc_ms(2026, 3, 8, 7)),
        (NY, HOUR, utc_ms(2026, 3, 8, 7), utc_ms(2026, 3, 8, 7), utc_ms(2026, 3, 8, 8)),
        (NY, DAY, utc_ms(2026, 3, 8, 12), utc_ms(2026, 3, 8, 5), utc_ms(2026, 3, 9, 4)),
        (NY, 2 * HOUR, utc_ms(2026, 3, 8, 6, 30), utc_ms(2026, 3, 8, 5), utc_ms(2026, 3, 8, 7)),
        (NY, 2 * HOUR, utc_ms(2026, 3, 8, 7, 30), utc_ms(2026, 3, 8, 7), utc_ms(2026, 3, 8, 8)),
        # The 45m slot of 02:15 is skipped: it starts at the jump, not at 02:15 EST (03:15 EDT, 07:15Z).
        (NY, 45 * MINUTE, utc_ms(2026, 3, 8, 6, 45), utc_ms(2026, 3, 8, 6, 30), utc_ms(2026, 3, 8, 7)),
        (NY, 45 * MINUTE, utc_ms(2026, 3, 8, 7, 10), utc_ms(2026, 3, 8, 7), utc_ms(2026, 3, 8, 7, 45)),
        # Kolkata (+05:30): hours start at :30 UTC, days at 18:30Z.
        (KOLKATA, HOUR, T0, utc_ms(2026, 11, 22, 7, 30), utc_ms(2026, 11, 22, 8, 30)),
        (KOLKATA, 30 * MINUTE, T0, utc_ms(2026, 11, 22, 8), utc_ms(2026, 11, 22, 8, 30)),
        (KOLKATA, 15 * MINUTE, T0, T0, utc_ms(2026, 11, 22, 8, 30)),
        (KOLKATA, DAY, T0, utc_ms(2026, 11, 21, 18, 30), utc_ms(2026, 11, 22, 18, 30)),
        (KOLKATA, DAY, utc_ms(2026, 11, 22, 18, 30), utc_ms(2026, 11, 22, 18, 30), utc_ms(2026, 11, 23, 18, 30)),
        # Santiago skips midnight on 2023-09-03 (00:00 -04 becomes 01:00 -03): the day starts at the jump.
        ("America/Santiago", DAY, utc_ms(2023, 9, 3, 12), utc_ms(2023, 9, 3, 4), utc_ms(2023, 9, 4, 3)),
        ("America/Santiago", DAY, utc_ms(2023, 9, 3, 3, 59), utc_ms(2023, 9, 2, 4), utc_ms(2023, 9, 3, 4)),
        # ... and on 2023-04-02 shows 23:00-24:00 of April 1 twice: a 25-hour day.
        ("America/Santiago", DAY, utc_ms(2023, 4, 2, 3, 30), utc_ms(2023, 4, 1, 3), utc_ms(2023, 4, 2, 4)),
        # Offset changes the local clock neither shows nor skips a full hour at. Lord Howe falls back 30
        # minutes at 02:00 +11 (15:00Z): its 01:00 hour runs until 02:00 +10:30, 90 minutes.
        ("Australia/Lord_Howe", HOUR, utc_ms(2026, 4, 4, 14, 59), utc_ms(2026, 4, 4, 14), utc_ms(2026, 4, 4, 15, 30)),
        ("Australia/Lord_Howe", HOUR, utc_ms(2026, 4, 4, 15, 10), utc_ms(2026, 4, 4, 14), utc_ms(2026, 4, 4, 15, 30)),
        # ... and springs from 02:00 to 02:30 +11 at 15:30Z: the 02:00 hour has its last 30 minutes.
        ("Australia/Lord_Howe", HOUR, utc_ms(2026, 10, 3, 15, 29), utc_ms(2026, 10, 3, 14, 30),
         utc_ms(2026, 10, 3, 15, 30)),
        ("Australia/Lord_Howe", HOUR, utc_ms(2026, 10, 3, 15, 45), utc_ms(2026, 10, 3, 15, 30),
         utc_ms(2026, 10, 3, 16)),
        # Chatham (+12:45) springs from 02:45 to 03:45 at 14:00Z: 45 minutes of 02:00, 15 of 03:00.
        ("Pacific/Chatham", HOUR, utc_ms(2026, 9, 26, 13, 59), utc_ms(2026, 9, 26, 13, 15), utc_ms(2026, 9, 26, 14)),
        ("Pacific/Chatham", HOUR, utc_ms(2026, 9, 26, 14), utc_ms(2026, 9, 26, 14), utc_ms(2026, 9, 26, 14, 15)),
        # ... and falls back from 03:45 to 02:45 at 14:00Z: the hour of 03:00 +13:45 ends when 03:00 is shown
        # again, at +12:45.
        ("Pacific/Chatham", HOUR, utc_ms(2026, 4, 4, 14, 5), utc_ms(2026, 4, 4, 13, 15), utc_ms(2026, 4, 4, 14, 15)),
        # Monrovia went from -0:44:30 to UTC at 1972-01-07T00:44:30Z, jumping past 00:00 local.
        ("Africa/Monrovia", HOUR, utc_ms(1972, 1, 7, 0, 44, 29), utc_ms(1972, 1, 6, 23, 44, 30),
         utc_ms(1972, 1, 7, 0, 44, 30)),
        ("Africa/Monrovia", HOUR, utc_ms(1972, 1, 7, 0, 50), utc_ms(1972, 1, 7, 0, 44, 30), utc_ms(1972, 1, 7, 1)),
        ("Africa/Monrovia", DAY, utc_ms(1972, 1, 7, 12), utc_ms(1972, 1, 7, 0, 44, 30), utc_ms(1972, 1, 8)),
    ],
    ids=[
        "ny-fall-first-0100", "ny-fall-repeated-0100", "ny-fall-15m-repeated", "ny-fall-25h-day",
        "ny-fall-25h-day-last-minute", "ny-fall-2h-slot-of-3h", "ny-fall-90m-slot-begun-before", "ny-spring-0100",
        "ny-spring-0300", "ny-spring-23h-day", "ny-spring-2h-before", "ny-spring-2h-slot-of-1h",
        "ny-spring-45m-before-skipped-slot",
        "ny-spring-45m-skipped-slot", "kolkata-hour", "kolkata-30m", "kolkata-15m-on-boundary", "kolkata-day",
        "kolkata-day-boundary", "santiago-midnight-skipped", "santiago-day-before", "santiago-25h-day",
        "lord-howe-fall-before", "lord-howe-fall-after", "lord-howe-spring-before", "lord-howe-spring-after",
        "chatham-spring-before", "chatham-spring-after", "chatham-fall", "monrovia-before", "monrovia-after",
        "monrovia-day",
    ],
)
def test_window(zone, size, ts, start, end):
    cal = Calendar(zone)
    assert cal.window(ts, size) == (start, end)
    assert Calendar(zone).start(ts, size) == start
    assert Calendar(zone).end(start, size) == end


# ---------------------------------------------------- calendar units, as local RFC 3339


@pytest.mark.parametrize(
    ("zone", "week_start", "size", "ts", "start", "end"),
    [
        (NY, 0, MONTH, T0, "2026-11-01T00:00:00-04:00", "2026-12-01T00:00:00-05:00"),
        (NY, 0, MONTH, utc_ms(2026, 11, 1, 4), "2026-11-01T00:00:00-04:00", "2026-12-01T00:00:00-05:00"),
        (NY, 0, MONTH, utc_ms(2026, 11, 1, 3, 59), "2026-10-01T00:00:00-04:00", "2026-11-01T00:00:00-04:00"),
        (NY, 0, QUARTER, T0, "2026-10-01T00:00:00-04:00", "2027-01-01T00:00:00-05:00"),
        (NY, 0, QUARTER, utc_ms(2026, 2, 14), "2026-01-01T00:00:00-05:00", "2026-04-01T00:00:00-04:00"),
        (NY, 0, YEAR, T0, "2026-01-01T00:00:00-05:00", "2027-01-01T00:00:00-05:00"),
        (KOLKATA, 0, YEAR, utc_ms(2026, 12, 31, 18, 30), "2027-01-01T00:00:00+05:30", "2028-01-01T00:00:00+05:30"),
        (KOLKATA, 0, MONTH, utc_ms(2024, 2, 29, 12), "2024-02-01T00:00:00+05:30", "2024-03-01T00:00:00+05:30"),
        ("UTC", 0, WEEK, T0, "2026-11-16T00:00:00Z", "2026-11-23T00:00:00Z"),
        ("UTC", 6, WEEK, T0, "2026-11-22T00:00:00Z", "2026-11-29T00:00:00Z"),
        (NY, 0, WEEK, T0, "2026-11-16T00:00:00-05:00", "2026-11-23T00:00:00-05:00"),
        (NY, 6, WEEK, T0, "2026-11-22T00:00:00-05:00", "2026-11-29T00:00:00-05:00"),
        (NY, 0, WEEK, utc_ms(2026, 11, 1, 12), "2026-10-26T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
        (NY, 6, WEEK, utc_ms(2026, 11, 1, 12), "2026-11-01T00:00:00-04:00", "2026-11-08T00:00:00-05:00"),
        ("UTC", 0, 7 * DAY, T0, "2026-11-19T00:00:00Z", "2026-11-26T00:00:00Z"),
        (NY, 0, 7 * DAY, T0, "2026-11-19T00:00:00-05:00", "2026-11-26T00:00:00-05:00"),
        (NY, 0, 2 * DAY, T0, "2026-11-21T00:00:00-05:00", "2026-11-23T00:00:00-05:00"),
        ("America/Santiago", 0, MONTH, utc_ms(2023, 9, 3, 12), "2023-09-01T00:00:00-04:00",
         "2023-10-01T00:00:00-03:00"),
        ("America/Santiago", 0, DAY, utc_ms(2023, 9, 3, 12), "2023-09-03T01:00:00-03:00",
         "2023-09-04T00:00:00-03:00"),
    ],
    ids=[
        "ny-november", "ny-november-first-instant", "ny-october-last-instant", "ny-q4", "ny-q1", "ny-year",
        "kolkata-year-first-instant", "kolkata-leap-february", "utc-week-monday", "utc-week-sunday",
        "ny-week-monday", "ny-week-sunday", "ny-week-monday-over-fall-back", "ny-week-sunday-from-fall-back",
        "utc-7d-epoch-aligned-thursday", "ny-7d-local-thursday", "ny-2d", "santiago-month-over-skipped-midnight",
        "santiago-day-from-the-jump",
    ],
)
def test_calendar_unit_window(zone, week_start, size, ts, start, end):
    cal = Calendar(zone, week_start)
    assert cal.window(ts, size) == (parse_event_time(start), parse_event_time(end))
    assert (cal.format(cal.start(ts, size)), cal.format(cal.end(cal.start(ts, size), size))) == (start, end)


@pytest.mark.parametrize(
    ("zone", "ts", "sizes", "expected"),
    [
        (NY, T0, (HOUR, DAY), utc_ms(2026, 11, 22, 9)),
        (NY, utc_ms(2026, 11, 23, 4, 30), (HOUR, DAY), utc_ms(2026, 11, 23, 5)),
        (NY, utc_ms(2026, 11, 30, 23), (DAY, MONTH, HOUR), utc_ms(2026, 12, 1)),
        (KOLKATA, T0, (DAY, 15 * MINUTE), utc_ms(2026, 11, 22, 8, 30)),
    ],
    ids=["hour-ends-first", "hour-and-day-end-together", "unit-sizes", "kolkata-quarter-hour"],
)
def test_earliest_end(zone, ts, sizes, expected):
    assert Calendar(zone).earliest_end(ts, sizes) == expected


# ------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("zone", "ms", "expected"),
    [
        (NY, utc_ms(2026, 11, 22, 8, 15, 0, 123), "2026-11-22T03:15:00.123-05:00"),
        (NY, utc_ms(2026, 11, 22, 8, 15, 0, 5), "2026-11-22T03:15:00.005-05:00"),
        ("Europe/London", utc_ms(2026, 1, 15, 12), "2026-01-15T12:00:00+00:00"),
        ("Europe/London", utc_ms(2026, 7, 15, 12), "2026-07-15T13:00:00+01:00"),
        ("Etc/GMT", T0, "2026-11-22T08:15:00+00:00"),
        (KOLKATA, T0, "2026-11-22T13:45:00+05:30"),
        ("Pacific/Chatham", T0, "2026-11-22T22:00:00+13:45"),
        ("America/St_Johns", T0, "2026-11-22T04:45:00-03:30"),
        # RFC 3339 offsets are whole minutes: Monrovia's -0:44:30 is written -00:44, the time moved to match.
        ("Africa/Monrovia", utc_ms(1971, 6, 1, 12), "1971-06-01T11:16:00-00:44"),
    ],
    ids=["ny-millis", "ny-leading-zero-millis", "london-winter-numeric-zero", "london-summer", "etc-gmt-numeric",
         "kolkata", "chatham", "st-johns", "monrovia-seconds-offset"],
)
def test_format(zone, ms, expected):
    assert Calendar(zone).format(ms) == expected
    assert parse_event_time(expected) == ms


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "Etc/Zulu", "Zulu", "Universal", "Etc/Universal", "Etc/UCT", "UCT"])
@pytest.mark.parametrize("ms", [0, T0, T0 + 123, MAX_EPOCH_MS], ids=["epoch", "whole", "millis", "max"])
def test_format_in_utc_is_format_rfc3339(zone, ms):
    assert Calendar(zone).format(ms) == format_rfc3339(ms)
    assert Calendar(zone).format(ms).endswith("Z")


def test_format_refuses_local_dates_after_9999():
    with pytest.raises(ValueError, match="after the year 9999"):
        Calendar("Pacific/Kiritimati").format(MAX_EPOCH_MS)


# ------------------------------------------------------------------------ far ahead


@pytest.mark.parametrize("size", [HOUR, 2 * HOUR, DAY, WEEK, MONTH, QUARTER, YEAR])
@pytest.mark.parametrize("zone", [NY, "Pacific/Kiritimati", "Australia/Lord_Howe"])
def test_windows_near_the_last_instant_repeat_those_400_years_earlier(zone, size):
    # The Gregorian calendar (weekdays included) and the zones' rules after their last listed change
    # repeat every 400 years (146097 days).
    cycle = 146_097 * DAY
    cal = Calendar(zone)
    start, end = cal.window(MAX_EPOCH_MS, size)
    assert start <= MAX_EPOCH_MS < end
    assert Calendar(zone).window(MAX_EPOCH_MS - cycle, size) == (start - cycle, end - cycle)


# ------------------------------------------------------------------------ properties


@cache
def offset_changes(zone_name):
    """Instants (epoch ms) at which the zone's UTC offset changes in 1970..2100, found day by day then bisected."""
    zone = ZoneInfo(zone_name)

    def offset(ms):
        return datetime.fromtimestamp(ms // SECOND, tz=zone).utcoffset()

    changes = []
    for day in range(T1970 // DAY, T2100 // DAY):
        low, high = day * DAY, (day + 1) * DAY
        if offset(low) != offset(high):
            while high - low > SECOND:
                middle = (low + high) // 2 // SECOND * SECOND
                low, high = (low, middle) if offset(middle) == offset(high) else (middle, high)
            changes.append(high)
    return tuple(changes) or (T0,)


ZONES = (NY, KOLKATA, "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham", "UTC")
CLOCK_SIZES = (15 * MINUTE, 30 * MINUTE, HOUR)
SLOT_SIZES = (45 * MINUTE, 90 * MINUTE, 2 * HOUR, 3 * HOUR, DAY)
SIZES = CLOCK_SIZES + SLOT_SIZES + (2 * DAY, 7 * DAY, WEEK, MONTH, QUARTER, YEAR)
# Each bigger window's start is also a start of the smaller one, and both rules agree on what that means.
NESTED = [(HOUR, 15 * MINUTE), (HOUR, 30 * MINUTE), (30 * MINUTE, 15 * MINUTE), (DAY, HOUR), (DAY, 15 * MINUTE),
          (2 * HOUR, HOUR), (3 * HOUR, 90 * MINUTE), (DAY, 2 * HOUR), (DAY, 45 * MINUTE), (2 * DAY, DAY),
          (7 * DAY, DAY), (WEEK, DAY), (MONTH, DAY), (QUARTER, MONTH), (YEAR, QUARTER), (YEAR, MONTH)]


@st.composite
def zoned_instants(draw):
    """A zone and an instant in 1970..2100: anywhere, or within three hours of one of its offset changes."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        return zone, draw(st.integers(min_value=T1970, max_value=T2100))
    change = draw(st.sampled_from(offset_changes(zone)))
    return zone, change + draw(st.integers(min_value=-3 * HOUR, max_value=3 * HOUR))


@pytest.fixture(scope="module")
def long_lived():
    """One calendar per zone for all examples: it remembers windows from one to the next, as a worker's does."""
    return {zone: Calendar(zone) for zone in ZONES}


@settings(max_examples=400, deadline=None)
@given(zoned=zoned_instants(), size=st.sampled_from(SIZES))
def test_windows_tile_time(long_lived, zoned, size):
    zone, ts = zoned
    start, end = long_lived[zone].window(ts, size)
    assert start <= ts < end
    fresh = Calendar(zone)
    assert fresh.window(ts, size) == (start, end)
    # Every instant of the window maps to it, and the next one starts where it ends: no gap, no overlap.
    assert fresh.window(start, size) == (start, end)
    assert fresh.window(end - 1, size) == (start, end)
    assert Calendar(zone).start(end, size) == end
    assert Calendar(zone).end(start, size) == end
    if size > 0:
        assert end - start <= size + HOUR  # a daylight saving shift is an hour at most in these zones


@settings(max_examples=300, deadline=None)
@given(zoned_instants(), st.sampled_from(NESTED))
def test_a_bigger_window_starts_at_a_start_of_each_smaller_one(zoned, sizes):
    zone, ts = zoned
    bigger, smaller = sizes
    cal = Calendar(zone)
    start = cal.start(ts, bigger)
    assert cal.start(start, smaller) == start


@settings(max_examples=100, deadline=None)
@given(zoned_instants())
def test_a_month_is_its_days(zoned):
    zone, ts = zoned
    cal = Calendar(zone)
    month_start, month_end = cal.window(ts, MONTH)
    local = datetime.fromtimestamp(month_start // SECOND, tz=ZoneInfo(zone))
    day_starts = [month_start]
    while day_starts[-1] < month_end:
        day_starts.append(cal.end(day_starts[-1], DAY))
    assert day_starts[-1] == month_end
    assert sum(b - a for a, b in zip(day_starts, day_starts[1:], strict=False)) == month_end - month_start
    assert len(day_starts) - 1 == calendar.monthrange(local.year, local.month)[1]


@settings(max_examples=300, deadline=None)
@given(zoned_instants(), st.sampled_from([DAY, WEEK, MONTH, QUARTER, YEAR]))
def test_a_day_or_unit_starts_on_the_local_date_that_begins_it(zoned, size):
    zone, ts = zoned
    start = Calendar(zone).start(ts, size)
    local_start = datetime.fromtimestamp(start // SECOND, tz=ZoneInfo(zone)).date()
    local_ts = datetime.fromtimestamp(ts // SECOND, tz=ZoneInfo(zone)).date()
    first = {
        DAY: local_ts,
        WEEK: date.fromordinal(local_ts.toordinal() - local_ts.weekday()),
        MONTH: local_ts.replace(day=1),
        QUARTER: local_ts.replace(month=local_ts.month - (local_ts.month - 1) % 3, day=1),
        YEAR: local_ts.replace(month=1, day=1),
    }[size]
    assert local_start == first


@settings(max_examples=200, deadline=None)
@given(zoned_instants())
def test_format_names_the_instant(zoned):
    zone, ts = zoned
    assert parse_event_time(Calendar(zone).format(ts)) == ts


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=MAX_EPOCH_MS), POSITIVE_SIZES)
def test_in_utc_every_positive_size_keeps_the_epoch_aligned_windows(ts, size):
    # The upgrade guarantee: in UTC a calendar gives exactly the windows of timeutil.window_start.
    for cal in (Calendar("UTC"), Calendar("Etc/GMT")):  # the arithmetic shortcut, and the zone arithmetic
        assert cal.start(ts, size) == ts - ts % size
        assert cal.end(ts - ts % size, size) == ts - ts % size + size


def test_a_calendar_asked_for_many_sizes_still_answers_each():
    # It remembers one window per size, for a bounded number of sizes.
    cal = Calendar(NY)
    for _ in range(2):
        for size in SECONDS_DIVIDING_A_DAY:
            assert cal.window(T0, size) == Calendar(NY).window(T0, size)


@given(st.integers(min_value=0, max_value=MAX_EPOCH_MS - DAY),
       st.lists(st.sampled_from(SECONDS_DIVIDING_A_DAY + (7 * DAY,)), min_size=1, max_size=4, unique=True))
def test_in_utc_earliest_end_is_earliest_window_end(ts, sizes):
    assert Calendar().earliest_end(ts, tuple(sizes)) == earliest_window_end(ts, tuple(sizes))
