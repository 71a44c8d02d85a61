"""Attribution weights and exact integer shares, from the definitions in KPIS.md."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.attribution import LEAD_CREDIT, MODELS, Touch, credit, share, weights

DAY = 86_400_000
HALF_LIFE = 7 * DAY


def touches(*times: int) -> list[Touch]:
    return [Touch(ts, f"c{i}", None) for i, ts in enumerate(times)]


@pytest.mark.parametrize(
    ("model", "times", "expected"),
    [
        ("first_touch", (0, 1, 2), [1.0, 0.0, 0.0]),
        ("last_touch", (0, 1, 2), [0.0, 0.0, 1.0]),
        ("linear", (0, 1, 2, 3), [0.25, 0.25, 0.25, 0.25]),
        ("position_based", (0, 1, 2), [0.4, 0.2, 0.4]),
        ("position_based", (0, 1, 2, 3, 4), [0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4]),
        ("position_based", (0, 1), [0.5, 0.5]),
        ("position_based", (0,), [1.0]),
        # One half-life apart: the older touch weighs half the newer one, so 1/3 and 2/3.
        ("time_decay", (0, HALF_LIFE), [1 / 3, 2 / 3]),
    ],
    ids=["first", "last", "linear", "u-shape-3", "u-shape-5", "u-shape-2", "u-shape-1", "decay-half-life"],
)
def test_weights(model: str, times: tuple[int, ...], expected: list[float]) -> None:
    assert weights(model, touches(*times), converted_at=HALF_LIFE, half_life_ms=HALF_LIFE) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("total", "shares", "expected"),
    [
        (10, [1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),  # one unit left over goes to the first
        (1_000_000, [0.4, 0.2, 0.4], [400_000, 200_000, 400_000]),
        (7, [0.5, 0.5], [4, 3]),
        (0, [0.5, 0.5], [0, 0]),
    ],
)
def test_share_is_exact(total: int, shares: list[float], expected: list[int]) -> None:
    assert share(total, shares) == expected


@given(st.integers(0, 10**12), st.lists(st.integers(0, 100 * DAY), min_size=1, max_size=30),
       st.sampled_from(MODELS))
def test_credit_always_sums_to_the_whole(amount: int, times: list[int], model: str) -> None:
    ordered = sorted(times)
    found = credit(model, touches(*ordered), ordered[-1], HALF_LIFE, "revenue", ordered[-1], amount)
    assert sum(fact.amount for fact in found.elements()) == amount
    assert all(fact.amount > 0 for fact in found)


def test_credit_merges_touches_of_one_channel() -> None:
    same = [Touch(0, "email", None), Touch(1, "email", None), Touch(2, "ads", "q4")]
    found = credit("linear", same, 2, HALF_LIFE, "leads", 2, LEAD_CREDIT)
    assert {(fact.channel, fact.campaign): fact.amount for fact in found} == {("email", None): 666_667,
                                                                              ("ads", "q4"): 333_333}
