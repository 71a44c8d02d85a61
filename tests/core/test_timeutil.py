"""Table-driven tests for stream.core.timeutil: durations, event times and UTC-aligned windows.

Expected epoch values are computed with ``calendar.timegm`` (plain integer
calendar arithmetic), never with the functions under test.
"""

import calendar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.timeutil import (
    MAX_EPOCH_MS,
    earliest_window_end,
    format_duration,
    format_rfc3339,
    parse_duration_ms,
    parse_event_time,
    window_start,
)

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def utc_ms(year, month, day, hour=0, minute=0, second=0, millis=0):
    """Epoch milliseconds of a UTC wall-clock time, by integer calendar arithmetic."""
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * 1000 + millis


# 2026-11-22T08:15:00Z: 20779 days after 1970-01-01, plus 8 h 15 min = 1_795_335_300 s.
T0 = utc_ms(2026, 11, 22, 8, 15)


def test_reference_instant_matches_hand_arithmetic():
    # 56 years 1970..2025 with 14 leap days, then 304 days Jan..Oct and 21 days of November.
    days = 56 * 365 + 14 + 304 + 21
    assert T0 == (days * 86_400 + 8 * 3600 + 15 * 60) * 1000 == 1_795_335_300_000


# ----------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("500ms", 500),
        ("30s", 30 * SECOND),
        ("10m", 10 * MINUTE),
        ("90m", 90 * MINUTE),
        ("1h", HOUR),
        ("24h", DAY),
        ("1d", DAY),
        ("7d", 7 * DAY),
        (" 2 h ", 2 * HOUR),
    ],
    ids=["ms", "seconds", "minutes", "90-minutes", "hour", "24-hours", "day", "week-in-days", "spaces"],
)
def test_parse_duration_ms(text, expected_ms):
    assert parse_duration_ms(text) == expected_ms


@pytest.mark.parametrize(
    "text",
    ["", "10", "h", "1w", "-1h", "1.5h", "1 hour", "0s", "0ms", "0d", "1h30m", "1H"],
    ids=[
        "empty",
        "no-unit",
        "no-number",
        "weeks",
        "negative",
        "fraction",
        "word-unit",
        "zero-s",
        "zero-ms",
        "zero-d",
        "compound",
        "upper-case-unit",
    ],
)
def test_parse_duration_ms_rejects(text):
    with pytest.raises(ValueError):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (500, "500ms"),
        (1500, "1500ms"),
        (SECOND, "1s"),
        (90 * SECOND, "90s"),
        (MINUTE, "1m"),
        (90 * MINUTE, "90m"),
        (HOUR, "1h"),
        (36 * HOUR, "36h"),
        (DAY, "1d"),
        (2 * DAY, "2d"),
    ],
    ids=["500ms", "1500ms", "1s", "90s", "1m", "90m", "1h", "36h", "1d", "2d"],
)
def test_format_duration_uses_largest_exact_unit(ms, expected):
    assert format_duration(ms) == expected


@given(st.integers(min_value=1, max_value=1000 * DAY))
def test_format_then_parse_duration_round_trips(ms):
    assert parse_duration_ms(format_duration(ms)) == ms


# ---------------------------------------------------------------- event time


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("2026-11-22T08:15:00Z", T0),
        ("2026-11-22T09:15:00+01:00", T0),
        ("2026-11-22T02:45:00-05:30", T0),
        ("2026-11-22T08:15:00+00:00", T0),
        ("2026-11-22T08:15:00-00:00", T0),
        ("2026-11-22T08:15:00z", T0),
        ("2026-11-22t08:15:00Z", T0),
        ("2026-11-22 08:15:00Z", T0),
        ("2026-11-22T08:15:00.5Z", T0 + 500),
        ("2026-11-22T08:15:00.123Z", T0 + 123),
        ("2026-11-22T09:15:00.250+01:00", T0 + 250),
        # Sub-millisecond digits are dropped (truncated, not rounded).
        ("2026-11-22T08:15:00.123999Z", T0 + 123),
        ("2026-11-22T08:15:00.123456789Z", T0 + 123),
        ("2026-11-23T00:15:00+16:00", T0),
        ("2024-02-29T00:00:00Z", utc_ms(2024, 2, 29)),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("9999-12-31T23:59:59.999Z", MAX_EPOCH_MS),
        (T0, T0),
        (0, 0),
        (MAX_EPOCH_MS, MAX_EPOCH_MS),
    ],
    ids=[
        "utc-z",
        "plus-01:00",
        "minus-05:30",
        "plus-00:00",
        "minus-00:00",
        "lower-z",
        "lower-t",
        "space-sep",
        "fraction-1-digit",
        "fraction-ms",
        "fraction-with-offset",
        "fraction-6-digits-truncated",
        "fraction-9-digits",
        "offset-crosses-day",
        "leap-day",
        "epoch",
        "epoch-with-offset",
        "max-string",
        "epoch-ms-int",
        "zero-int",
        "max-int",
    ],
)
def test_parse_event_time(value, expected_ms):
    assert parse_event_time(value) == expected_ms


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        1_795_335_300_000.0,
        1.5,
        None,
        ["2026-11-22T08:15:00Z"],
        -1,
        MAX_EPOCH_MS + 1,
        "2026-11-22T08:15:00",
        "2026-11-22",
        "1969-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "not a date",
        "",
    ],
    ids=[
        "true",
        "false",
        "float-ms",
        "float",
        "none",
        "list",
        "negative-int",
        "int-over-max",
        "naive",
        "date-only",
        "before-epoch",
        "feb-30",
        "feb-29-non-leap",
        "month-13",
        "hour-24",
        "after-9999-via-offset",
        "garbage",
        "empty",
    ],
)
def test_parse_event_time_rejects(value):
    with pytest.raises(ValueError):
        parse_event_time(value)


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("9999-12-31T23:59:59.999999Z", MAX_EPOCH_MS),
        ("2600-01-01T00:00:00.999999Z", utc_ms(2600, 1, 1, 0, 0, 0, 999)),
    ],
    ids=["last-microsecond-of-9999", "year-2600-last-microsecond"],
)
def test_parse_event_time_keeps_second_of_far_future_fractions(value, expected_ms):
    assert parse_event_time(value) == expected_ms


@pytest.mark.parametrize(
    "value",
    ["20261122T081500Z", "2026-W47-1T08:00:00Z", "2026-11-22T08:15Z", "2026-11-22T08Z"],
    ids=["basic-format", "iso-week-date", "no-seconds", "hour-only"],
)
def test_parse_event_time_rejects_non_rfc3339_iso_forms(value):
    with pytest.raises(ValueError):
        parse_event_time(value)


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (T0, "2026-11-22T08:15:00Z"),
        (T0 + 123, "2026-11-22T08:15:00.123Z"),
        (T0 + 5, "2026-11-22T08:15:00.005Z"),
        (T0 + 999, "2026-11-22T08:15:00.999Z"),
        (utc_ms(2024, 2, 29, 23, 59, 59), "2024-02-29T23:59:59Z"),
        (MAX_EPOCH_MS, "9999-12-31T23:59:59.999Z"),
    ],
    ids=["epoch", "whole-second", "millis", "leading-zero-millis", "999-millis", "leap-day", "max"],
)
def test_format_rfc3339(ms, expected):
    assert format_rfc3339(ms) == expected


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=MAX_EPOCH_MS))
def test_format_then_parse_event_time_round_trips(ms):
    assert parse_event_time(format_rfc3339(ms)) == ms


# ------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("ts", "size", "expected"),
    [
        (T0, HOUR, utc_ms(2026, 11, 22, 8)),
        (T0, DAY, utc_ms(2026, 11, 22)),
        (T0, 15 * MINUTE, utc_ms(2026, 11, 22, 8, 15)),
        (T0 - 1, 15 * MINUTE, utc_ms(2026, 11, 22, 8)),
        (utc_ms(2026, 11, 22, 8, 59, 59, 999), HOUR, utc_ms(2026, 11, 22, 8)),
        (utc_ms(2026, 11, 22, 9), HOUR, utc_ms(2026, 11, 22, 9)),
        (utc_ms(2026, 11, 22, 23, 59, 59, 999), DAY, utc_ms(2026, 11, 22)),
        # 2026-11-22 is day 20779 since the epoch (odd): its 2-day window started the day before.
        (T0, 2 * DAY, utc_ms(2026, 11, 21)),
        (0, HOUR, 0),
    ],
    ids=[
        "1h-mid",
        "1d-mid",
        "15m-on-boundary",
        "15m-just-before",
        "1h-last-ms",
        "1h-boundary-belongs-to-next",
        "1d-last-ms",
        "2d-epoch-aligned",
        "epoch",
    ],
)
def test_window_start_is_utc_aligned(ts, size, expected):
    assert window_start(ts, size) == expected


@pytest.mark.parametrize(
    ("ts", "sizes", "expected"),
    [
        (T0, (HOUR, DAY), utc_ms(2026, 11, 22, 9)),
        (T0, (DAY,), utc_ms(2026, 11, 23)),
        (utc_ms(2026, 11, 22, 23, 30), (HOUR, DAY), utc_ms(2026, 11, 23)),
        (T0, (15 * MINUTE, HOUR), utc_ms(2026, 11, 22, 8, 30)),
    ],
    ids=["hour-ends-first", "day-only", "both-end-at-midnight", "quarter-hour"],
)
def test_earliest_window_end(ts, sizes, expected):
    assert earliest_window_end(ts, sizes) == expected
