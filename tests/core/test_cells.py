"""Tests for stream.core.cells: which cells an observation touches, the deltas, and the cell fold."""

import calendar

import orjson
import pytest

from stream.core.cells import (
    ASSET,
    ATTRIBUTION,
    CONVERSION_TIME,
    FUNNEL,
    OTHER,
    OWNER,
    SHARE_ALL,
    CellDelta,
    CellId,
    CellState,
    cell_ids,
    deltas_for_facts,
    deltas_for_spend,
    fold_share_names,
    place,
    share_name,
    step_name,
)
from stream.core.funnel import Attribution, ConversionFact, StageFact
from stream.core.windows import utc_windows

HOUR = 3_600_000
DAY = 24 * HOUR
SIZES = utc_windows((HOUR, DAY))


def utc_ms(year, month, day, hour=0, minute=0):
    return calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0)) * 1000


T0 = utc_ms(2026, 11, 22, 8, 15)
H8 = utc_ms(2026, 11, 22, 8)
D22 = utc_ms(2026, 11, 22)
PAID = Attribution("paid_social", "q4")
EMAIL = Attribution("email", None)


@pytest.mark.parametrize(
    ("family", "campaign", "sizes", "expected"),
    [
        (
            FUNNEL,
            "q4",
            (HOUR, DAY),
            [
                CellId(FUNNEL, HOUR, H8, None, None),
                CellId(FUNNEL, HOUR, H8, "paid_social", None),
                CellId(FUNNEL, HOUR, H8, "paid_social", "q4"),
                CellId(FUNNEL, DAY, D22, None, None),
                CellId(FUNNEL, DAY, D22, "paid_social", None),
                CellId(FUNNEL, DAY, D22, "paid_social", "q4"),
            ],
        ),
        (
            FUNNEL,
            None,
            (HOUR, DAY),
            [
                CellId(FUNNEL, HOUR, H8, None, None),
                CellId(FUNNEL, HOUR, H8, "paid_social", None),
                CellId(FUNNEL, DAY, D22, None, None),
                CellId(FUNNEL, DAY, D22, "paid_social", None),
            ],
        ),
        (
            CONVERSION_TIME,
            "q4",
            (HOUR, DAY),
            [
                CellId(CONVERSION_TIME, HOUR, H8, None, None),
                CellId(CONVERSION_TIME, HOUR, H8, "paid_social", None),
                CellId(CONVERSION_TIME, DAY, D22, None, None),
                CellId(CONVERSION_TIME, DAY, D22, "paid_social", None),
            ],
        ),
        (
            FUNNEL,
            "q4",
            (HOUR,),
            [
                CellId(FUNNEL, HOUR, H8, None, None),
                CellId(FUNNEL, HOUR, H8, "paid_social", None),
                CellId(FUNNEL, HOUR, H8, "paid_social", "q4"),
            ],
        ),
    ],
    ids=["funnel-three-levels", "funnel-no-campaign", "conversion-time-no-campaign-level", "one-size"],
)
def test_cell_ids(family, campaign, sizes, expected):
    found = cell_ids(family, T0, "paid_social", campaign, utc_windows(sizes))
    assert sorted(found, key=repr) == sorted(expected, key=repr)


def test_cell_end_is_start_plus_size():
    assert SIZES.end(HOUR, H8) == utc_ms(2026, 11, 22, 9)
    assert SIZES.end(DAY, D22) == utc_ms(2026, 11, 23)


def test_routing_key_groups_every_window_and_value_of_one_family_at_one_level_and_size():
    hour = CellId(FUNNEL, HOUR, H8, "email", "q4")
    assert hour.routing_key() == CellId(FUNNEL, HOUR, H8 + 5 * HOUR, "email", "q4").routing_key()
    assert hour.routing_key() != CellId(FUNNEL, DAY, D22, "email", "q4").routing_key()
    # Every value of the level, and the `other` cells it folds into, share the partition that decides.
    assert hour.routing_key() == CellId(FUNNEL, HOUR, H8, "paid_social", "spring").routing_key()
    assert hour.routing_key() == CellId(FUNNEL, HOUR, H8, OTHER, OTHER).routing_key()
    assert hour.routing_key() != CellId(FUNNEL, HOUR, H8, "email", None).routing_key()
    assert hour.routing_key() != CellId(CONVERSION_TIME, HOUR, H8, "email", "q4").routing_key()
    assert CellId(ASSET, HOUR, H8, None, None, "/a").routing_key() == CellId(ASSET, HOUR, H8 + HOUR, None, None,
                                                                              "/b").routing_key()
    # An attribution cell's key is its model: each model decides for itself.
    assert (CellId(ATTRIBUTION, HOUR, H8, "email", None, "linear").routing_key()
            != CellId(ATTRIBUTION, HOUR, H8, "email", None, "first_touch").routing_key())


def _place(cell, known, taken, limit=2):
    return place(cell, lambda c: c in known, taken, limit)


def test_place_gives_own_cells_up_to_the_limit_then_folds_into_other():
    email, paid = CellId(FUNNEL, HOUR, H8, "email", None), CellId(FUNNEL, HOUR, H8, "paid", None)
    assert _place(email, set(), 0) == email
    assert _place(paid, {email}, 1) == paid
    assert _place(CellId(FUNNEL, HOUR, H8, "web", None), {email, paid}, 2) == CellId(FUNNEL, HOUR, H8, OTHER, None)
    # A value that has its cell keeps it, however full the window.
    assert _place(email, {email, paid}, 7) == email
    # All traffic is never folded.
    everything = CellId(FUNNEL, HOUR, H8, None, None)
    assert _place(everything, set(), 99) == everything
    page = CellId(ASSET, HOUR, H8, None, None, "/pricing")
    assert _place(page, set(), 2) == page._replace(key=OTHER)
    owner = CellId(OWNER, HOUR, H8, None, None, "ann")
    assert _place(owner, set(), 1) == owner
    assert _place(owner, set(), 2) == owner._replace(key=OTHER)


def test_place_folds_a_campaign_into_its_channel_then_into_channel_and_campaign_other():
    q4 = CellId(FUNNEL, HOUR, H8, "email", "q4")
    assert _place(q4, set(), 1) == q4
    assert _place(q4, set(), 2) == q4._replace(campaign=OTHER)
    assert _place(q4, set(), 3) == q4._replace(campaign=OTHER)
    # Twice the limit: only a channel whose `other` campaign exists keeps it.
    assert _place(q4, {q4._replace(campaign=OTHER)}, 9) == q4._replace(campaign=OTHER)
    assert _place(q4, set(), 4) == q4._replace(channel=OTHER, campaign=OTHER)


def test_replays_are_told_apart_from_other_values_folded_at_the_same_position():
    state = CellState()
    assert not state.is_replay("0", 5)
    state.mark_applied("0", 5)
    assert state.is_replay("0", 5) and state.is_replay("0", 4) and not state.is_replay("0", 6)
    # Two values folded into this cell by the same upstream position, after its own delta.
    assert not state.is_replay("0", 5, "a")
    state.mark_applied("0", 5, "a")
    assert state.is_replay("0", 5, "a") and state.is_replay("0", 5) and not state.is_replay("0", 5, "b")
    state.mark_applied("0", 5, "b")
    assert state.is_replay("0", 5, "b")
    # Survives the table round trip; a later position starts afresh; sources are separate.
    again = CellState.from_doc(orjson.loads(orjson.dumps(state.to_doc())))
    assert again.is_replay("0", 5, "a") and not again.is_replay("1", 5, "a")
    again.mark_applied("0", 6, "c")
    assert again.is_replay("0", 6, "c") and not again.is_replay("0", 6) and again.is_replay("0", 5, "zzz")
    again.mark_applied("0", 7)
    assert again.folded == {} and again.is_replay("0", 7) and not again.is_replay("0", 7, "c")


def test_revenue_share_names_fold_like_cells():
    sums: dict[str, int] = {SHARE_ALL: 0}
    first = CellDelta(sums={SHARE_ALL: 10, "email": 4, "paid": 6})
    fold_share_names(first, sums, 2)
    assert first.sums == {SHARE_ALL: 10, "email": 4, "paid": 6}
    state = CellState(sums=sums)
    state.apply(first)
    later = CellDelta(sums={SHARE_ALL: 5, "web": 2, "email": 1, "ads": 2, share_name("email", "q4"): 1})
    fold_share_names(later, state.sums, 2)
    assert later.sums == {SHARE_ALL: 5, OTHER: 4, "email": 1, share_name("email", OTHER): 1}
    state.apply(later)
    # Twice the limit reached (email, paid, other, email/other): a new channel's campaign goes to other/other.
    last = CellDelta(sums={share_name("web", "x"): 3, share_name("email", "y"): 2})
    fold_share_names(last, state.sums, 2)
    assert last.sums == {share_name(OTHER, OTHER): 3, share_name("email", OTHER): 2}


def test_step_name():
    assert step_name("mql", "sql") == "mql>sql"


# ----------------------------------------------------------------- deltas


def test_stage_fact_counts_in_every_funnel_cell():
    deltas = deltas_for_facts([(StageFact("mql", T0), PAID, 1)], SIZES)
    assert set(deltas) == set(cell_ids(FUNNEL, T0, "paid_social", "q4", SIZES))
    assert all(delta.counts == {"mql": 1} for delta in deltas.values())
    assert all(not delta.samples_added and not delta.samples_removed for delta in deltas.values())


def test_stage_facts_merge_per_cell():
    changes = [
        (StageFact("lead", T0), EMAIL, 1),
        (StageFact("mql", T0 + 1000), EMAIL, 1),
        (StageFact("mql", T0 + 2000), EMAIL, 1),
    ]
    deltas = deltas_for_facts(changes, utc_windows((HOUR,)))
    assert deltas == {
        CellId(FUNNEL, HOUR, H8, None, None): CellDelta(counts={"lead": 1, "mql": 2}),
        CellId(FUNNEL, HOUR, H8, "email", None): CellDelta(counts={"lead": 1, "mql": 2}),
    }


def test_conversion_fact_adds_samples_to_conversion_time_cells():
    deltas = deltas_for_facts([(ConversionFact("lead", "mql", T0, 90_000), PAID, 1)], SIZES)
    assert set(deltas) == set(cell_ids(CONVERSION_TIME, T0, "paid_social", "q4", SIZES))
    assert all(delta.samples_added == {"lead>mql": [90_000]} for delta in deltas.values())
    assert all(delta.counts == {} and delta.samples_removed == {} for delta in deltas.values())


def test_retracted_conversion_fact_removes_its_sample():
    deltas = deltas_for_facts([(ConversionFact("mql", "sal", T0, 5000), EMAIL, -1)], utc_windows((HOUR,)))
    assert deltas == {
        CellId(CONVERSION_TIME, HOUR, H8, None, None): CellDelta(samples_removed={"mql>sal": [5000]}),
        CellId(CONVERSION_TIME, HOUR, H8, "email", None): CellDelta(samples_removed={"mql>sal": [5000]}),
    }


def test_correction_inside_one_window_cancels_out():
    changes = [(StageFact("mql", T0), EMAIL, -1), (StageFact("mql", T0 - 60_000), EMAIL, 1)]
    assert deltas_for_facts(changes, utc_windows((HOUR,))) == {}


def test_correction_across_windows_moves_the_count():
    earlier = utc_ms(2026, 11, 22, 7, 59)
    changes = [(StageFact("mql", T0), EMAIL, -1), (StageFact("mql", earlier), EMAIL, 1)]
    deltas = deltas_for_facts(changes, SIZES)
    h7 = utc_ms(2026, 11, 22, 7)
    assert deltas == {
        CellId(FUNNEL, HOUR, H8, None, None): CellDelta(counts={"mql": -1}),
        CellId(FUNNEL, HOUR, H8, "email", None): CellDelta(counts={"mql": -1}),
        CellId(FUNNEL, HOUR, h7, None, None): CellDelta(counts={"mql": 1}),
        CellId(FUNNEL, HOUR, h7, "email", None): CellDelta(counts={"mql": 1}),
        # Both times fall in the same day: the day cells do not change at all.
    }


def test_deltas_for_spend():
    deltas = deltas_for_spend(T0, "paid_social", "q4", 120_500_000, SIZES)
    assert deltas == {
        cell: CellDelta(spend_micros=120_500_000) for cell in cell_ids(FUNNEL, T0, "paid_social", "q4", SIZES)
    }
    assert len(deltas) == 6


@pytest.mark.parametrize(
    ("delta", "empty"),
    [
        (CellDelta(), True),
        (CellDelta(counts={"mql": 0}), True),
        (CellDelta(counts={"mql": -1}), False),
        (CellDelta(spend_micros=1), False),
        (CellDelta(samples_added={"lead>mql": [1]}), False),
        (CellDelta(samples_removed={"lead>mql": [1]}), False),
    ],
    ids=["default", "zero-count", "negative-count", "spend", "sample-added", "sample-removed"],
)
def test_cell_delta_is_empty(delta, empty):
    assert delta.is_empty() is empty


@pytest.mark.parametrize(
    "delta",
    [
        CellDelta(),
        CellDelta(
            counts={"lead": 2, "mql": -1},
            spend_micros=5,
            samples_added={"lead>mql": [1, 2]},
            samples_removed={"mql>sal": [3]},
        ),
    ],
    ids=["empty", "full"],
)
def test_cell_delta_doc_round_trip(delta):
    assert CellDelta.from_doc(orjson.loads(orjson.dumps(delta.to_doc()))) == delta


def test_cell_delta_doc_drops_zero_counts():
    assert CellDelta(counts={"lead": 0, "mql": 1}).to_doc() == {"c": {"mql": 1}}


# ------------------------------------------------------------------- fold


def test_cell_state_folds_deltas():
    state = CellState()
    state.apply(CellDelta(counts={"lead": 2}, spend_micros=1_000_000, samples_added={"lead>mql": [300, 100]}))
    state.apply(CellDelta(counts={"lead": 1, "mql": 1}, spend_micros=500_000, samples_added={"lead>mql": [200]}))
    state.apply(CellDelta(counts={"mql": -1}, samples_removed={"lead>mql": [300]}))
    assert state.counts == {"lead": 3, "mql": 0}
    assert state.spend_micros == 1_500_000
    assert state.samples == {"lead>mql": [100, 200]}


def test_cell_state_removes_before_adding_in_one_delta():
    state = CellState(samples={"lead>mql": [100, 500]})
    # A lead's conversion time corrected from 500 to 400 in one delta.
    state.apply(CellDelta(samples_added={"lead>mql": [400]}, samples_removed={"lead>mql": [500]}))
    assert state.samples == {"lead>mql": [100, 400]}


def test_cell_state_removing_an_unknown_sample_changes_nothing():
    state = CellState(samples={"lead>mql": [100]})
    state.apply(CellDelta(samples_removed={"lead>mql": [999], "mql>sal": [1]}))
    assert state.samples == {"lead>mql": [100]}


@pytest.mark.parametrize(
    "state",
    [
        CellState(),
        CellState(
            counts={"lead": 3},
            spend_micros=7,
            samples={"lead>mql": [1, 5]},
            applied={"cells-0": 41},
            emitted={"cost_per_lead|1h|x|{}": [2, [1.0, 3, 0.33, False, None]]},
            final=True,
        ),
    ],
    ids=["empty", "full"],
)
def test_cell_state_doc_round_trip(state):
    assert CellState.from_doc(orjson.loads(orjson.dumps(state.to_doc()))) == state


def test_merged_deltas_apply_like_the_sequence() -> None:
    first = CellDelta(counts={"lead": 1}, spend_micros=5, samples_added={"lead>mql": [10, 20]}, sums={"revenue": 7})
    second = CellDelta(counts={"lead": -1, "mql": 1}, samples_removed={"lead>mql": [20, 30]},
                       samples_added={"lead>mql": [25]}, sums={"revenue": 3})
    one_by_one, merged = CellState(samples={"lead>mql": [30]}), CellState(samples={"lead>mql": [30]})
    one_by_one.apply(first)
    one_by_one.apply(second)
    first.merge(second)
    merged.apply(first)
    assert merged.counts == one_by_one.counts == {"lead": 0, "mql": 1}
    assert merged.samples == one_by_one.samples == {"lead>mql": [10, 25]}
    assert merged.sums == one_by_one.sums == {"revenue": 10}
    assert merged.spend_micros == one_by_one.spend_micros == 5
