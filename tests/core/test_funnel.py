"""Tests for stream.core.funnel: stage entry semantics, pending changes, facts and their changes."""

from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.funnel import (
    DEFAULT_FUNNEL,
    AmountFact,
    AssetFact,
    Attribution,
    CloseFact,
    CohortFact,
    ConversionFact,
    LeadState,
    PendingChange,
    StageFact,
    apply_lead,
    apply_stage_change,
    entry_times,
    expire_pending,
    fact_changes,
    facts,
    from_doc,
    to_doc,
)

LEAD_ATTRS = {"channel": "paid_social", "campaign": "q4-webinar", "owner": "ana", "asset": "/ebook", "visitor": "v-1"}
SOURCE = ("stage-changes", 0, 0)


def change(event_id, stage, ts, amount=None):
    return PendingChange(event_id, ts, stage, amount, SOURCE, f'{{"event_id": "{event_id}"}}')


def build(created_ts, changes, attrs=LEAD_ATTRS):
    """A lead state with its creation (if any) applied first, then the stage changes in order."""
    state = LeadState()
    if created_ts is not None:
        apply_lead(state, created_ts, attrs)
    for number, (stage, ts) in enumerate(changes):
        apply_stage_change(state, change(f"sc-{number}", stage, ts))
    return state


# ------------------------------------------------------------------ lead events


def test_apply_lead_sets_creation_and_attribution():
    state = LeadState()
    apply_lead(state, 1000, LEAD_ATTRS)
    assert state.arrived
    assert state.created_ts == 1000
    assert (state.channel, state.campaign, state.owner, state.asset, state.visitor) == (
        "paid_social",
        "q4-webinar",
        "ana",
        "/ebook",
        "v-1",
    )
    assert state.attribution() == Attribution("paid_social", "q4-webinar")


def test_new_lead_state_has_no_attribution():
    state = LeadState()
    assert not state.arrived
    assert state.attribution() is None


@pytest.mark.parametrize(
    ("second_ts", "expected_ts", "expected_channel"),
    [(500, 500, "email"), (1500, 1000, "paid_social"), (1000, 1000, "paid_social")],
    ids=["earlier-creation-wins", "later-creation-ignored", "same-time-keeps-first"],
)
def test_earliest_lead_event_wins(second_ts, expected_ts, expected_channel):
    state = LeadState()
    apply_lead(state, 1000, LEAD_ATTRS)
    apply_lead(state, second_ts, {"channel": "email"})
    assert state.created_ts == expected_ts
    assert state.channel == expected_channel


def test_lead_without_optional_attributes():
    state = LeadState()
    apply_lead(state, 1000, {"channel": "email"})
    assert state.attribution() == Attribution("email", None)
    assert (state.owner, state.asset, state.visitor) == (None, None, None)


# ---------------------------------------------------------------- stage changes


def test_stage_change_before_lead_is_pending_and_applied_on_arrival():
    state = LeadState()
    assert apply_stage_change(state, change("sc-1", "mql", 2000)) is False
    assert [p.event_id for p in state.pending] == ["sc-1"]
    assert entry_times(state, DEFAULT_FUNNEL) == {}
    apply_lead(state, 1000, LEAD_ATTRS)
    assert state.pending == []
    assert entry_times(state, DEFAULT_FUNNEL) == {"lead": 1000, "mql": 2000}


def test_pending_change_delivered_twice_is_kept_once():
    state = LeadState()
    apply_stage_change(state, change("sc-1", "mql", 2000))
    apply_stage_change(state, change("sc-1", "mql", 2000))
    apply_stage_change(state, change("sc-2", "sql", 3000))
    assert [p.event_id for p in state.pending] == ["sc-1", "sc-2"]


def test_stage_change_after_lead_is_applied_now():
    state = build(1000, [])
    assert apply_stage_change(state, change("sc-1", "mql", 2000)) is True
    assert state.pending == []
    assert state.observed == {"mql": 2000}


@pytest.mark.parametrize(
    ("created_ts", "changes", "funnel", "expected"),
    [
        (None, [("mql", 2000)], DEFAULT_FUNNEL, {}),
        (1000, [], DEFAULT_FUNNEL, {"lead": 1000}),
        (1000, [("mql", 2000)], DEFAULT_FUNNEL, {"lead": 1000, "mql": 2000}),
        (
            1000,
            [("mql", 2000), ("opportunity", 5000)],
            DEFAULT_FUNNEL,
            {"lead": 1000, "mql": 2000, "sal": 5000, "sql": 5000, "opportunity": 5000},
        ),
        (
            1000,
            [("won", 9000)],
            DEFAULT_FUNNEL,
            {"lead": 1000, "mql": 9000, "sal": 9000, "sql": 9000, "opportunity": 9000, "won": 9000},
        ),
        (1000, [("mql", 4000), ("mql", 2000), ("mql", 3000)], DEFAULT_FUNNEL, {"lead": 1000, "mql": 2000}),
        (1000, [("mql", 3000), ("sql", 2000)], DEFAULT_FUNNEL, {"lead": 1000, "mql": 2000, "sal": 2000, "sql": 2000}),
        (1000, [("mql", 500)], DEFAULT_FUNNEL, {"lead": 500, "mql": 500}),
        (1000, [("lost", 7000)], DEFAULT_FUNNEL, {"lead": 1000, "lost": 7000}),
        (
            1000,
            [("opportunity", 5000), ("lost", 7000), ("lost", 6000)],
            DEFAULT_FUNNEL,
            {"lead": 1000, "mql": 5000, "sal": 5000, "sql": 5000, "opportunity": 5000, "lost": 6000},
        ),
        (1000, [("lost", 500)], DEFAULT_FUNNEL, {"lead": 1000, "lost": 500}),
        (1000, [("sql", 3000)], ("lead", "mql", "sql"), {"lead": 1000, "mql": 3000, "sql": 3000}),
        (
            1000,
            [("won", 3000), ("sql", 2000)],
            ("lead", "mql", "sql", "won"),
            {"lead": 1000, "mql": 2000, "sql": 2000, "won": 3000},
        ),
    ],
    ids=[
        "no-lead-yet",
        "lead-only",
        "lead-and-mql",
        "jump-implies-sal-sql",
        "won-implies-everything",
        "earliest-time-wins",
        "later-stage-earlier-pulls-back",
        "stage-before-creation",
        "lost-implies-nothing",
        "lost-beside-order-earliest",
        "lost-before-creation",
        "custom-funnel-implies",
        "custom-funnel-with-won",
    ],
)
def test_entry_times(created_ts, changes, funnel, expected):
    assert entry_times(build(created_ts, changes), funnel) == expected


# ------------------------------------------------------------------- expiry


@pytest.mark.parametrize(
    ("older_than", "expired_ids", "kept_ids"),
    [
        (1000, [], ["a", "b", "c"]),
        (2001, ["a"], ["b", "c"]),
        (3000, ["a"], ["b", "c"]),
        (3001, ["a", "b"], ["c"]),
        (10_000, ["a", "b", "c"], []),
    ],
    ids=["none", "first", "boundary-kept", "two", "all"],
)
def test_expire_pending(older_than, expired_ids, kept_ids):
    state = LeadState()
    for event_id, ts in (("a", 2000), ("b", 3000), ("c", 4000)):
        apply_stage_change(state, change(event_id, "mql", ts))
    expired = expire_pending(state, older_than)
    assert [p.event_id for p in expired] == expired_ids
    assert [p.event_id for p in state.pending] == kept_ids


def test_expired_change_is_not_applied_when_the_lead_arrives():
    state = LeadState()
    apply_stage_change(state, change("a", "sql", 2000))
    expire_pending(state, 3000)
    apply_lead(state, 1000, LEAD_ATTRS)
    assert entry_times(state, DEFAULT_FUNNEL) == {"lead": 1000}


# -------------------------------------------------------------------- facts


def test_facts_of_a_lead_with_an_implied_stage():
    state = build(0, [("mql", 1000), ("sql", 5000)])
    assert facts(state, DEFAULT_FUNNEL) == Counter(
        {
            StageFact("lead", 0): 1,
            StageFact("mql", 1000): 1,
            StageFact("sal", 5000): 1,
            StageFact("sql", 5000): 1,
            ConversionFact("lead", "mql", 1000, 1000): 1,
            ConversionFact("mql", "sal", 5000, 4000): 1,
            ConversionFact("sal", "sql", 5000, 0): 1,
            AssetFact("/ebook", 0): 1,  # the lead was created on its asset
        }
    )


def test_facts_include_lost_but_no_conversion_to_it():
    state = build(0, [("lost", 3000)])
    assert facts(state, DEFAULT_FUNNEL) == Counter({
        StageFact("lead", 0): 1, StageFact("lost", 3000): 1, AssetFact("/ebook", 0): 1,
        CloseFact("lost", 3000, "ana"): 1,  # closed by the lead's owner (the change named none)
    })


def test_facts_of_a_lead_not_yet_arrived_are_empty():
    assert facts(build(None, [("mql", 1000)]), DEFAULT_FUNNEL) == Counter()


PAID = Attribution("paid_social", "q4-webinar")
EMAIL = Attribution("email", None)


def test_corrected_entry_time_moves_the_fact():
    state = build(0, [("mql", 5000)])
    before, before_attr = facts(state, DEFAULT_FUNNEL), state.attribution()
    apply_stage_change(state, change("late", "mql", 3000))
    after, after_attr = facts(state, DEFAULT_FUNNEL), state.attribution()
    assert Counter(fact_changes(before, before_attr, after, after_attr)) == Counter(
        {
            (StageFact("mql", 5000), PAID, -1): 1,
            (ConversionFact("lead", "mql", 5000, 5000), PAID, -1): 1,
            (StageFact("mql", 3000), PAID, 1): 1,
            (ConversionFact("lead", "mql", 3000, 3000), PAID, 1): 1,
        }
    )


def test_unchanged_facts_yield_no_changes():
    state = build(0, [("mql", 5000)])
    before = facts(state, DEFAULT_FUNNEL)
    apply_stage_change(state, change("later", "mql", 6000))
    assert fact_changes(before, PAID, facts(state, DEFAULT_FUNNEL), PAID) == []


def test_lead_arrival_adds_every_fact():
    state = LeadState()
    apply_stage_change(state, change("sc", "mql", 2000))
    before, before_attr = facts(state, DEFAULT_FUNNEL), state.attribution()
    apply_lead(state, 1000, LEAD_ATTRS)
    changes = fact_changes(before, before_attr, facts(state, DEFAULT_FUNNEL), state.attribution())
    assert Counter(changes) == Counter(
        {
            (StageFact("lead", 1000), PAID, 1): 1,
            (StageFact("mql", 2000), PAID, 1): 1,
            (ConversionFact("lead", "mql", 2000, 1000), PAID, 1): 1,
            (AssetFact("/ebook", 1000), PAID, 1): 1,
        }
    )


def test_changed_attribution_moves_every_fact():
    state = build(1000, [("mql", 2000)])
    before, before_attr = facts(state, DEFAULT_FUNNEL), state.attribution()
    apply_lead(state, 500, {"channel": "email"})
    changes = fact_changes(before, before_attr, facts(state, DEFAULT_FUNNEL), state.attribution())
    assert Counter(changes) == Counter(
        {
            (StageFact("lead", 1000), PAID, -1): 1,
            (StageFact("mql", 2000), PAID, -1): 1,
            (ConversionFact("lead", "mql", 2000, 1000), PAID, -1): 1,
            (StageFact("lead", 500), EMAIL, 1): 1,
            (StageFact("mql", 2000), EMAIL, 1): 1,
            (ConversionFact("lead", "mql", 2000, 1500), EMAIL, 1): 1,
            (AssetFact("/ebook", 1000), PAID, -1): 1,  # the earlier lead event names no asset
        }
    )


def test_no_attribution_on_either_side_yields_nothing():
    assert fact_changes(Counter(), None, Counter(), None) == []


# ------------------------------------------------------------ serialisation


def _full_state():
    state = LeadState()
    apply_stage_change(state, change("pending-1", "sql", 9000, amount=1_500_000))
    apply_stage_change(state, change("pending-2", "won", 9500))
    state.channel, state.campaign = "paid_social", None
    state.observed = {"mql": 2000, "opportunity": 3000}
    state.amounts = {"opportunity": 2_700_000_000}
    state.owner, state.asset, state.visitor = "ana", "/ebook", "v-1"
    return state


@pytest.mark.parametrize(
    "state",
    [
        LeadState(),
        build(1000, [("mql", 2000), ("lost", 3000)]),
        _full_state(),
        build(1000, [], attrs={"channel": "email"}),
    ],
    ids=["empty", "arrived-with-stages", "pending-and-amounts", "minimal-lead"],
)
def test_to_doc_from_doc_round_trip(state):
    assert from_doc(to_doc(state)) == state
    # And through JSON, as the lead table stores it.
    assert from_doc(orjson.loads(orjson.dumps(to_doc(state)))) == state


def test_pending_source_is_a_tuple_after_json_round_trip():
    state = LeadState()
    apply_stage_change(state, PendingChange("sc", 5, "mql", None, ("stage-changes", 3, 42), "{}"))
    restored = from_doc(orjson.loads(orjson.dumps(to_doc(state))))
    assert restored.pending[0].source == ("stage-changes", 3, 42)


# ------------------------------------------------------- order independence

STAGES = ("mql", "sal", "sql", "opportunity", "won", "lost")


def expected_entries(created_ts, changes, funnel):
    """Reference model from the contract's definition, written independently of entry_times."""
    expected = {}
    for index, stage in enumerate(funnel):
        at_or_after = [ts for name, ts in changes if name in funnel[index:]]
        if index == 0:
            at_or_after.append(created_ts)
        if at_or_after:
            expected[stage] = min(at_or_after)
    lost = [ts for name, ts in changes if name == "lost"]
    if lost:
        expected["lost"] = min(lost)
    return expected


_TIMES = st.integers(min_value=0, max_value=50)  # small range: ties between events are common
_CHANGES = st.lists(st.tuples(st.sampled_from(STAGES), _TIMES), max_size=8)


@st.composite
def arrival_orders(draw):
    """A lead, its stage changes (some delivered twice), and one arrival order of all of them."""
    created_ts = draw(_TIMES)
    changes = draw(_CHANGES)
    events = [("lead", None, created_ts)] + [("change", f"sc-{i}", item) for i, item in enumerate(changes)]
    duplicates = draw(st.lists(st.sampled_from(events[1:]), max_size=3)) if changes else []
    order = draw(st.permutations(events + duplicates))
    return created_ts, changes, order


def replay(order):
    state = LeadState()
    for what, event_id, payload in order:
        if what == "lead":
            apply_lead(state, payload, LEAD_ATTRS)
        else:
            stage, ts = payload
            apply_stage_change(state, change(event_id, stage, ts))
    return state


@settings(max_examples=200, deadline=None)
@given(arrival_orders())
def test_entry_times_do_not_depend_on_arrival_order(case):
    created_ts, changes, order = case
    state = replay(order)
    assert state.pending == []
    assert entry_times(state, DEFAULT_FUNNEL) == expected_entries(created_ts, changes, DEFAULT_FUNNEL)


@settings(max_examples=100, deadline=None)
@given(arrival_orders(), st.randoms(use_true_random=False))
def test_two_arrival_orders_give_the_same_facts(case, rng):
    _, _, order = case
    shuffled = list(order)
    rng.shuffle(shuffled)
    first, second = replay(order), replay(shuffled)
    assert entry_times(first, DEFAULT_FUNNEL) == entry_times(second, DEFAULT_FUNNEL)
    assert facts(first, DEFAULT_FUNNEL) == facts(second, DEFAULT_FUNNEL)


@settings(max_examples=100, deadline=None)
@given(_TIMES, _CHANGES)
def test_changes_pending_before_the_lead_equal_changes_after_it(created_ts, changes):
    pending_first = LeadState()
    for number, (stage, ts) in enumerate(changes):
        assert apply_stage_change(pending_first, change(f"sc-{number}", stage, ts)) is False
    apply_lead(pending_first, created_ts, LEAD_ATTRS)
    assert entry_times(pending_first, DEFAULT_FUNNEL) == entry_times(build(created_ts, changes), DEFAULT_FUNNEL)


def test_amount_owner_and_cohort_facts():
    state = build(0, [("mql", 1000)])
    apply_stage_change(state, PendingChange("w", 9000, "won", 7_000_000, SOURCE, "{}", "bo"))
    found = facts(state, DEFAULT_FUNNEL, cohort_window_ms=5000)
    # Won at 9000 implies every stage before it; the won amount and closing owner come from that change.
    assert found[AmountFact("won", 9000, 7_000_000)] == 1
    assert found[CloseFact("won", 9000, "bo")] == 1
    # Cohorts: lead->mql converted within 5 s; mql->sal took 8 s (not converted in the window).
    assert found[CohortFact("lead", "mql", 0, True)] == 1
    assert found[CohortFact("mql", "sal", 1000, False)] == 1
    assert found[CohortFact("opportunity", "won", 9000, True)] == 1
    assert not any(isinstance(fact, AmountFact) and fact.stage == "opportunity" for fact in found)


def test_amount_counts_only_from_the_observation_that_set_the_entry():
    state = build(0, [])
    apply_stage_change(state, PendingChange("o1", 5000, "opportunity", 3_000_000, SOURCE, "{}"))
    assert facts(state, DEFAULT_FUNNEL)[AmountFact("opportunity", 5000, 3_000_000)] == 1
    # A later won implies nothing earlier; an earlier won moves the opportunity entry before its own amount.
    apply_stage_change(state, PendingChange("w1", 4000, "won", None, SOURCE, "{}"))
    found = facts(state, DEFAULT_FUNNEL)
    assert not any(isinstance(fact, AmountFact) for fact in found)
