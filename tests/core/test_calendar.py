"""Tests for stream.core.calendar: window size codes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.calendar import MONTH, QUARTER, WEEK, YEAR, parse_window_size, size_label
from stream.core.timeutil import MAX_EPOCH_MS

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
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


@pytest.mark.parametrize("size", [0, -5, 7 * MINUTE, 500, 36 * HOUR], ids=["zero", "-5", "7m", "500ms", "36h"])
def test_sizes_that_are_no_window_size_code_are_refused(size):
    with pytest.raises(ValueError, match="is not a window size code"):
        size_label(size)


@given(st.one_of(POSITIVE_SIZES, st.sampled_from([WEEK, MONTH, QUARTER, YEAR])))
def test_size_label_then_parse_round_trips(size):
    assert parse_window_size(size_label(size)) == size
