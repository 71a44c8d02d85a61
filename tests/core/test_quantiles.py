"""Tests for stream.core.quantiles: sorted sample lists, median and nearest-rank percentiles."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.quantiles import add_sorted, median, nearest_rank, remove_sorted


@pytest.mark.parametrize(
    ("samples", "value", "expected"),
    [([], 5, [5]), ([1, 3], 2, [1, 2, 3]), ([1, 3], 0, [0, 1, 3]), ([1, 3], 9, [1, 3, 9]), ([2, 2], 2, [2, 2, 2])],
    ids=["empty", "middle", "front", "back", "duplicate"],
)
def test_add_sorted(samples, value, expected):
    add_sorted(samples, value)
    assert samples == expected


@pytest.mark.parametrize(
    ("samples", "value", "removed", "expected"),
    [
        ([1, 2, 3], 2, True, [1, 3]),
        ([1, 2, 2, 3], 2, True, [1, 2, 3]),
        ([1, 3], 2, False, [1, 3]),
        ([], 1, False, []),
        ([1, 3], 4, False, [1, 3]),
    ],
    ids=["present", "one-of-duplicates", "absent-middle", "empty", "absent-after-end"],
)
def test_remove_sorted(samples, value, removed, expected):
    assert remove_sorted(samples, value) is removed
    assert samples == expected


@pytest.mark.parametrize(
    ("samples", "expected"),
    [([], None), ([7], 7.0), ([1, 9], 5.0), ([1, 2, 10], 2.0), ([1, 2, 3, 10], 2.5), ([4, 4, 4, 4], 4.0)],
    ids=["empty", "one", "two", "odd", "even", "all-equal"],
)
def test_median(samples, expected):
    assert median(samples) == expected


@pytest.mark.parametrize(
    ("samples", "fraction", "expected"),
    [
        ([], 0.9, None),
        ([5], 0.9, 5.0),
        ([1, 2, 3], 0.9, 3.0),  # rank ceil(2.7) = 3
        (list(range(1, 11)), 0.9, 9.0),  # rank ceil(9.0) = 9
        (list(range(1, 21)), 0.9, 18.0),  # rank 18
        (list(range(1, 12)), 0.9, 10.0),  # rank ceil(9.9) = 10
        (list(range(1, 11)), 0.5, 5.0),  # rank 5 (nearest rank, not the interpolated 5.5)
        ([10, 20, 30], 0.0, 10.0),  # rank is at least 1
        ([10, 20, 30], 1.0, 30.0),
    ],
    ids=["empty", "one", "three", "ten", "twenty", "eleven", "p50-of-ten", "p0", "p100"],
)
def test_nearest_rank(samples, fraction, expected):
    assert nearest_rank(samples, fraction) == expected


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=500))
def test_p90_is_the_observed_value_at_rank_ceil_nine_tenths(values):
    samples = sorted(values)
    rank = -(-9 * len(samples) // 10)  # ceil(0.9 n) in exact integer arithmetic
    assert nearest_rank(samples, 0.9) == float(samples[rank - 1])


@given(st.lists(st.integers(min_value=-1000, max_value=1000), max_size=100), st.data())
def test_add_then_remove_keeps_the_list_sorted(values, data):
    samples = []
    for value in values:
        add_sorted(samples, value)
    assert samples == sorted(values)
    removed = data.draw(st.lists(st.sampled_from(values), max_size=len(values)) if values else st.just([]))
    remaining = sorted(values)
    for value in removed:
        present = value in remaining
        assert remove_sorted(samples, value) is present
        if present:
            remaining.remove(value)
    assert samples == remaining
