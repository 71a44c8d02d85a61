"""Tests for stream.core.kpis: KPI values (with KPIS.md's worked examples), records, keys and revisions."""

import calendar
import json
from decimal import Decimal
from pathlib import Path

import fastjsonschema
import orjson
import pytest

from stream.core.cells import CONVERSION_TIME, FUNNEL, CellId, CellState
from stream.core.funnel import DEFAULT_FUNNEL
from stream.core.kpis import (
    CONVERSION_TIME_BUCKETS,
    FAMILY_CONVERSION_RATE,
    FAMILY_COST_PER_LEAD,
    FAMILY_TIME_TO_CONVERSION,
    FAMILY_VOLUME,
    FUNNEL_RATIOS,
    Quotient,
    changed_records,
    conversion_rate,
    conversion_stats,
    cost_per_lead,
    current_records,
    ratio,
    record_key,
    step_conversions,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
validate_record = fastjsonschema.compile(json.loads((SCHEMA_DIR / "kpi-record.schema.json").read_text("utf-8")))

HOUR = 3_600_000
DAY = 24 * HOUR
USD = 1_000_000  # micro-units per dollar


def utc_ms(year, month, day, hour=0, minute=0):
    return calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0)) * 1000


H8 = utc_ms(2026, 11, 22, 8)
NOW = utc_ms(2026, 11, 22, 8, 20)
WINDOW_1H = {"size": "1h", "start": "2026-11-22T08:00:00Z", "end": "2026-11-22T09:00:00Z", "zone": "UTC",
             "kind": "calendar"}


# ------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("spend_micros", "leads", "expected"),
    [
        (1_000 * USD, 20, 50.0),  # KPIS.md: $1,000 of paid social producing 20 leads -> $50
        (10_000 * USD, 200, 50.0),  # KPIS.md: $10,000 producing 200 leads -> $50
        (0, 5, 0.0),
        (1 * USD, 3, 0.333333),  # quantised to six decimals
        (2 * USD, 3, 0.666667),
        (5, 2, 0.000002),  # 0.0000025 is a tie: even 0.000002
        (15, 2, 0.000008),  # 0.0000075 is a tie: even 0.000008
        (1_000 * USD, 0, None),
        (0, 0, None),
        (1_000 * USD, -1, None),
    ],
    ids=[
        "kpis-md-1000-over-20",
        "kpis-md-10000-over-200",
        "no-spend",
        "third",
        "two-thirds",
        "tie-down",
        "tie-up",
        "no-leads",
        "nothing",
        "negative-leads",
    ],
)
def test_cost_per_lead(spend_micros, leads, expected):
    assert cost_per_lead(spend_micros, leads) == expected


@pytest.mark.parametrize(
    ("entered_to", "entered_from", "expected"),
    [
        (35, 150, 35 / 150),  # KPIS.md: 150 leads in May, 35 converted -> 23.3 %
        (20, 4000, 0.005),  # KPIS.md: a blog post seen by 4,000 people yields 20 leads -> 0.5 %
        (20, 100, 0.2),  # KPIS.md: seen by 100 people with 20 leads -> 20 %
        (0, 10, 0.0),
        (10, 10, 1.0),
        (3, 0, None),
        (0, 0, None),
    ],
    ids=[
        "kpis-md-35-of-150",
        "kpis-md-20-of-4000",
        "kpis-md-20-of-100",
        "none-converted",
        "all-converted",
        "zero-denominator",
        "nothing",
    ],
)
def test_conversion_rate(entered_to, entered_from, expected):
    assert conversion_rate(entered_to, entered_from) == expected


def test_conversion_rate_worked_example_reads_as_23_3_percent():
    assert round(conversion_rate(35, 150) * 100, 1) == 23.3


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(20, 4000, 0.005), (20_000, 5_000, 4.0), (1, 3, 1 / 3), (5, 0, None), (0, 0, None), (2.5, 0.5, 5.0)],
    ids=["visit-to-lead", "roas-ratio", "third", "zero-denominator", "nothing", "floats"],
)
def test_ratio(numerator, denominator, expected):
    assert ratio(numerator, denominator) == expected


def _histogram(**counts):
    """Cumulative histogram with every bucket, from keyword counts named b<bound> (missing -> same as before)."""
    out, running = {}, 0
    for bound in CONVERSION_TIME_BUCKETS:
        running = counts.get(f"b{bound}", running)
        out[str(bound)] = running
    out["+Inf"] = counts.get("inf", running)
    return out


@pytest.mark.parametrize(
    ("samples_ms", "expected"),
    [
        ([], {"count": 0, "mean": None, "median": None, "p90": None, "histogram": _histogram(inf=0)}),
        ([1_000], {"count": 1, "mean": 1.0, "median": 1.0, "p90": 1.0, "histogram": _histogram(b60=1)}),
        # Odd count: the middle one. p90 rank = ceil(0.9 * 3) = 3.
        ([1_000, 2_000, 9_000], {"count": 3, "mean": 4.0, "median": 2.0, "p90": 9.0, "histogram": _histogram(b60=3)}),
        # Even count: mean of the middle two. p90 rank = ceil(0.9 * 4) = 4.
        (
            [1_000, 2_000, 3_000, 10_000],
            {"count": 4, "mean": 4.0, "median": 2.5, "p90": 10.0, "histogram": _histogram(b60=4)},
        ),
        # 1..10 s: p90 rank = ceil(0.9 * 10) = 9 -> 9 s (an observed value, not interpolated).
        (
            [s * 1_000 for s in range(1, 11)],
            {"count": 10, "mean": 5.5, "median": 5.5, "p90": 9.0, "histogram": _histogram(b60=10)},
        ),
        # Bucket edges are inclusive (le): 60 s counts in "60", 60.001 s in "600".
        (
            [60_000, 60_001, 600_000, 600_001, 200 * DAY],
            {
                "count": 5,
                "mean": (60 + 60.001 + 600 + 600.001 + 200 * 86_400) / 5,
                "median": 600.0,
                "p90": 200 * 86_400.0,
                "histogram": _histogram(b60=1, b600=3, b3600=4, inf=5),
            },
        ),
        # One sample per region: 30 min, 2 days, 10 days, 45 days.
        (
            [1_800_000, 2 * DAY, 10 * DAY, 45 * DAY],
            {
                "count": 4,
                "mean": (1_800 + 2 * 86_400 + 10 * 86_400 + 45 * 86_400) / 4,
                "median": 6 * 86_400.0,
                "p90": 45 * 86_400.0,
                "histogram": _histogram(b60=0, b3600=1, b259200=2, b1209600=3, b5184000=4),
            },
        ),
    ],
    ids=["empty", "one", "odd", "even", "one-to-ten", "bucket-edges", "spread"],
)
def test_conversion_stats(samples_ms, expected):
    stats = conversion_stats(samples_ms)
    assert stats.keys() == expected.keys()
    assert stats["count"] == expected["count"]
    assert stats["median"] == expected["median"]
    assert stats["p90"] == expected["p90"]
    assert stats["histogram"] == expected["histogram"]
    if expected["mean"] is None:
        assert stats["mean"] is None
    else:
        assert stats["mean"] == pytest.approx(expected["mean"])


@pytest.mark.parametrize(
    ("kpi", "state", "expected"),
    [
        # KPIS.md: $1,000 of paid social producing 20 leads -> $50.
        ("cost_per_lead", CellState(counts={"lead": 20}, spend_micros=1_000 * USD), Quotient(1_000.0, 20, 50.0)),
        ("cost_per_lead", CellState(counts={"lead": 3}, spend_micros=100 * USD), Quotient(100.0, 3, 33.333333)),
        ("cost_per_lead", CellState(spend_micros=100 * USD), Quotient(100.0, 0, None)),
        ("cost_per_mql", CellState(counts={"lead": 20, "mql": 5}, spend_micros=1_000 * USD),
         Quotient(1_000.0, 5, 200.0)),
        ("cost_per_mql", CellState(counts={"lead": 20}, spend_micros=1_000 * USD), Quotient(1_000.0, 0, None)),
        # KPIS.md: a CPL of $20 with a CPA of $100.
        ("cost_per_acquisition", CellState(counts={"lead": 50, "won": 10}, spend_micros=1_000 * USD),
         Quotient(1_000.0, 10, 100.0)),
        ("cost_per_acquisition", CellState(counts={"won": 4}), Quotient(0.0, 4, 0.0)),
        ("win_rate", CellState(counts={"won": 2, "lost": 6}), Quotient(2, 8, 0.25)),
        ("win_rate", CellState(counts={"won": 0, "lost": 3}), Quotient(0, 3, 0.0)),
        ("win_rate", CellState(counts={"lead": 9}), Quotient(0, 0, None)),
        # KPIS.md: $5,000 on ads yielding $20,000 of sales -> ROAS 4 (a ratio, not a percent).
        ("roas", CellState(spend_micros=5_000 * USD, sums={"revenue": 20_000 * USD}), Quotient(20_000.0, 5_000.0, 4.0)),
        ("roas", CellState(sums={"revenue": 20_000 * USD}), Quotient(20_000.0, 0.0, None)),
    ],
    ids=["cpl-kpis-md", "cpl-micro-unit", "cpl-no-leads", "cpm", "cpm-no-mql", "cpa-kpis-md", "cpa-no-spend",
         "win-rate", "win-rate-none-won", "win-rate-none-closed", "roas-kpis-md", "roas-no-spend"],
)
def test_funnel_ratios(kpi, state, expected):
    assert FUNNEL_RATIOS[kpi](state) == expected


def test_step_conversions_follow_the_funnel_in_order():
    state = CellState(counts={"lead": 150, "mql": 35, "sql": 7})
    assert list(step_conversions(state, ("lead", "mql", "sal", "sql"))) == [
        ("lead", "mql", Quotient(35, 150, 35 / 150)),  # KPIS.md: 35 of 150 leads converted
        ("mql", "sal", Quotient(0, 35, 0.0)),
        ("sal", "sql", Quotient(7, 0, None)),  # a stage skipped leaves no value, not infinity
    ]
    assert list(step_conversions(state, ("lead",))) == []


@pytest.mark.parametrize(
    ("state", "records_sent"),
    [
        (CellState(counts={"lead": 20, "mql": 5, "sal": 4, "sql": 3, "opportunity": 2, "won": 2, "lost": 6},
                   spend_micros=1_000 * USD, sums={"revenue": 4_000 * USD, "pipeline": 9_000 * USD}), 10),
        (CellState(counts={"lead": 3, "mql": 3}, spend_micros=100 * USD), 6),
        (CellState(counts={"won": 1}, sums={"revenue": 7 * USD}), 4),
        (CellState(spend_micros=1), 4),
    ],
    ids=["everything", "no-sales", "no-spend", "spend-only"],
)
def test_records_carry_the_funnel_ratios_and_step_conversions(state, records_sent):
    """The records take these KPIs from the definitions the gauges read: numerator, denominator and value."""
    records = {(r.record["kpi"], r.record["dimensions"].get("from_stage")): r.record
               for r in changed_records(CellId(FUNNEL, HOUR, H8, "email", None), state, DEFAULT_FUNNEL, "USD", NOW)}
    expected = {(kpi, None): quotient_of(state) for kpi, quotient_of in FUNNEL_RATIOS.items()}
    expected |= {("conversion_rate", from_stage): quotient
                 for from_stage, _, quotient in step_conversions(state, DEFAULT_FUNNEL)}
    compared = 0
    for key, (numerator, denominator, value) in expected.items():
        if not numerator and not denominator:
            assert key not in records  # nothing behind it: not sent yet
            continue
        record = records[key]
        assert (record["numerator"], record["denominator"], record["value"]) == (numerator, denominator, value)
        compared += 1
    assert compared == records_sent


# --------------------------------------------------------------------- keys


def test_record_key_ignores_dimension_order():
    first = record_key("conversion_rate", HOUR, H8, {"from_stage": "mql", "to_stage": "sql", "channel": "email"})
    second = record_key("conversion_rate", HOUR, H8, {"channel": "email", "to_stage": "sql", "from_stage": "mql"})
    assert first == second


@pytest.mark.parametrize(
    ("other"),
    [
        ("volume", HOUR, H8, {"channel": "email"}),
        ("cost_per_lead", DAY, H8, {"channel": "email"}),
        ("cost_per_lead", HOUR, H8 + HOUR, {"channel": "email"}),
        ("cost_per_lead", HOUR, H8, {}),
        ("cost_per_lead", HOUR, H8, {"channel": "seo"}),
        ("cost_per_lead", HOUR, H8, {"channel": "email", "campaign": "q4"}),
    ],
    ids=["other-kpi", "other-size", "other-start", "roll-up", "other-channel", "extra-dimension"],
)
def test_record_key_differs_for_a_different_series(other):
    assert record_key("cost_per_lead", HOUR, H8, {"channel": "email"}) != record_key(*other)


def test_record_key_is_deterministic():
    dims = {"channel": "email"}
    assert record_key("cost_per_lead", HOUR, H8, dims) == record_key("cost_per_lead", HOUR, H8, dict(dims))


# ------------------------------------------------------------------ records


def by_kpi(records):
    """{(kpi, from_stage, to_stage): record} for easy lookup."""
    out = {}
    for item in records:
        dims = item.record["dimensions"]
        out[(item.record["kpi"], dims.get("from_stage"), dims.get("to_stage"))] = item
    return out


def assert_schema_valid(records):
    for item in records:
        validate_record(item.record)


def funnel_cell(channel="paid_social", campaign=None, size=HOUR, start=H8):
    return CellId(FUNNEL, size, start, channel, campaign)


def test_first_records_of_a_funnel_cell():
    state = CellState(counts={"lead": 20, "mql": 5}, spend_micros=1_000 * USD)
    records = changed_records(funnel_cell(), state, DEFAULT_FUNNEL, "USD", NOW)
    assert_schema_valid(records)
    found = by_kpi(records)
    # Zero KPIs never sent before (sal..won and lost volumes, sal>sql and later steps, the win rate,
    # revenue and deal size with nothing won) are not sent; a zero numerator over a non-zero denominator is.
    assert set(found) == {
        ("cost_per_lead", None, None),
        ("cost_per_mql", None, None),
        ("cost_per_acquisition", None, None),
        ("lead_to_opportunity", None, None),
        ("lead_to_customer", None, None),
        ("close_rate", None, None),
        ("average_lead_value", None, None),
        ("roas", None, None),
        ("roi", None, None),
        ("lead_volume", None, None),
        ("mql_volume", None, None),
        ("conversion_rate", "lead", "mql"),
        ("conversion_rate", "mql", "sal"),
    }
    assert found[("cost_per_mql", None, None)].record["value"] == 200.0  # $1,000 / 5 MQLs
    assert found[("cost_per_acquisition", None, None)].record["value"] is None  # nothing won yet
    assert found[("roi", None, None)].record["value"] == -1.0  # no revenue for $1,000 spent
    cpl = found[("cost_per_lead", None, None)]
    assert cpl.family == FAMILY_COST_PER_LEAD
    assert cpl.record == {
        "kpi": "cost_per_lead",
        "window": WINDOW_1H,
        "dimensions": {"channel": "paid_social"},
        "value": 50.0,
        "numerator": 1000.0,
        "denominator": 20,
        "unit": "USD",
        "final": False,
        "revision": 1,
        "emitted_at": "2026-11-22T08:20:00Z",
    }
    rate = found[("conversion_rate", "lead", "mql")]
    assert rate.family == FAMILY_CONVERSION_RATE
    assert rate.record["dimensions"] == {"from_stage": "lead", "to_stage": "mql", "channel": "paid_social"}
    assert (rate.record["numerator"], rate.record["denominator"], rate.record["value"]) == (5, 20, 0.25)
    assert rate.record["unit"] == "ratio"
    started = found[("conversion_rate", "mql", "sal")].record
    assert (started["numerator"], started["denominator"], started["value"]) == (0, 5, 0.0)
    volume = found[("mql_volume", None, None)]
    assert volume.family == FAMILY_VOLUME
    assert (volume.record["value"], volume.record["numerator"], volume.record["denominator"]) == (5.0, 5, None)
    assert all(item.record["revision"] == 1 for item in records)


def test_nothing_is_emitted_for_an_empty_cell():
    assert changed_records(funnel_cell(), CellState(), DEFAULT_FUNNEL, "USD", NOW) == []


def test_unchanged_cell_emits_nothing_the_second_time():
    state = CellState(counts={"lead": 20, "mql": 5}, spend_micros=1_000 * USD)
    assert changed_records(funnel_cell(), state, DEFAULT_FUNNEL, "USD", NOW)
    assert changed_records(funnel_cell(), state, DEFAULT_FUNNEL, "USD", NOW + 1000) == []


def test_revision_grows_by_one_only_for_changed_content():
    cell = funnel_cell()
    state = CellState(counts={"lead": 20, "mql": 5}, spend_micros=1_000 * USD)
    first = by_kpi(changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW))
    state.counts["lead"] = 25
    second = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 1000)
    assert_schema_valid(second)
    found = by_kpi(second)
    # mql volume, mql>sal (0 of 5) and the spend-per-MQL/won KPIs did not change; every per-lead one did.
    assert set(found) == {
        ("cost_per_lead", None, None),
        ("lead_volume", None, None),
        ("conversion_rate", "lead", "mql"),
        ("lead_to_opportunity", None, None),
        ("lead_to_customer", None, None),
        ("close_rate", None, None),
        ("average_lead_value", None, None),
    }
    assert all(item.record["revision"] == 2 for item in second)
    assert all(found[name].key == first[name].key for name in found)
    assert found[("cost_per_lead", None, None)].record["value"] == 40.0  # $1,000 / 25
    assert found[("conversion_rate", "lead", "mql")].record["value"] == 0.2  # 5 / 25
    state.spend_micros += 500 * USD
    third = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 2000)
    assert sorted((item.record["kpi"], item.record["revision"], item.record["value"]) for item in third) == [
        ("cost_per_acquisition", 2, None),  # $1,500 / 0 won
        ("cost_per_lead", 3, 60.0),  # $1,500 / 25
        ("cost_per_mql", 2, 300.0),  # $1,500 / 5
        ("roas", 2, 0.0),
        ("roi", 2, -1.0),
    ]


def test_current_records_repeat_the_last_record_of_every_kpi_sent_and_only_those():
    cell = funnel_cell()
    state = CellState(counts={"lead": 20, "mql": 5}, spend_micros=1_000 * USD)
    changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW)
    state.counts["lead"] = 25
    last = {item.key: item for item in changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 1000)}
    # A restored state (through the table's JSON) gives the same records again, revisions unchanged.
    restored = CellState.from_doc(orjson.loads(orjson.dumps(state.to_doc())))
    again = {item.key: item for item in current_records(cell, restored, DEFAULT_FUNNEL, "USD", NOW + 5000)}
    assert_schema_valid(list(again.values()))
    assert set(again) == set(state.emitted)
    for key, item in last.items():
        assert {**again[key].record, "emitted_at": None} == {**item.record, "emitted_at": None}
    assert again[last.popitem()[0]].record["emitted_at"] == "2026-11-22T08:20:05Z"
    # KPIs with nothing behind them were never sent, so they are not sent now either.
    assert "sal_volume" not in {item.record["kpi"] for item in again.values()}
    assert current_records(cell, CellState(counts={"lead": 3}), DEFAULT_FUNNEL, "USD", NOW) == []


def test_value_is_null_when_the_denominator_is_zero():
    state = CellState(counts={"mql": 3}, spend_micros=500 * USD)
    records = changed_records(funnel_cell(campaign="q4"), state, DEFAULT_FUNNEL, "EUR", NOW)
    assert_schema_valid(records)
    found = by_kpi(records)
    cpl = found[("cost_per_lead", None, None)].record
    assert (cpl["value"], cpl["numerator"], cpl["denominator"], cpl["unit"]) == (None, 500.0, 0, "EUR")
    assert cpl["dimensions"] == {"channel": "paid_social", "campaign": "q4"}
    rate = found[("conversion_rate", "lead", "mql")].record
    assert (rate["value"], rate["numerator"], rate["denominator"]) == (None, 3, 0)


def test_emitted_kpi_is_followed_back_to_zero():
    cell = funnel_cell(channel=None)
    state = CellState(counts={"lead": 1, "mql": 1})
    changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW)
    state.counts["mql"] = 0  # a corrected entry time moved the MQL to another window
    records = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 1000)
    assert_schema_valid(records)
    found = by_kpi(records)
    assert set(found) == {
        ("mql_volume", None, None),
        ("cost_per_mql", None, None),
        ("conversion_rate", "lead", "mql"),
        ("conversion_rate", "mql", "sal"),
    }
    assert found[("mql_volume", None, None)].record["value"] == 0.0
    assert found[("mql_volume", None, None)].record["revision"] == 2
    assert found[("mql_volume", None, None)].record["dimensions"] == {}
    assert found[("conversion_rate", "lead", "mql")].record["value"] == 0.0  # 0 of 1
    emptied = found[("conversion_rate", "mql", "sal")].record  # was 0 of 1, now 0 of 0
    assert (emptied["value"], emptied["numerator"], emptied["denominator"], emptied["revision"]) == (None, 0, 0, 2)


def test_final_flag_bumps_every_emitted_record():
    cell = funnel_cell()
    state = CellState(counts={"lead": 4})
    first = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW)
    state.final = True
    final = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 1000)
    assert_schema_valid(final)
    assert {item.key for item in final} == {item.key for item in first}
    assert all(item.record["final"] is True and item.record["revision"] == 2 for item in final)


def test_conversion_time_records():
    cell = CellId(CONVERSION_TIME, DAY, utc_ms(2026, 11, 22), "email", None)
    state = CellState(samples={"lead>mql": [60_000, 120_000, 7_200_000]})
    records = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW)
    assert_schema_valid(records)
    assert len(records) == 1  # steps without samples are not sent
    (item,) = records
    assert item.family == FAMILY_TIME_TO_CONVERSION
    assert item.record["window"] == {"size": "1d", "start": "2026-11-22T00:00:00Z", "end": "2026-11-23T00:00:00Z",
                                     "zone": "UTC", "kind": "calendar"}
    assert item.record["dimensions"] == {"from_stage": "lead", "to_stage": "mql", "channel": "email"}
    assert item.record["unit"] == "seconds"
    assert item.record["numerator"] == 7_380.0  # 60 + 120 + 7200 s
    assert item.record["denominator"] == 3
    assert item.record["value"] == 120.0  # the median
    assert item.record["stats"] == {
        "count": 3,
        "mean": 2_460.0,
        "median": 120.0,
        "p90": 7_200.0,
        "histogram": _histogram(b60=1, b600=2, b3600=2, b21600=3),
    }


def test_conversion_time_change_of_p90_only_is_emitted():
    cell = CellId(CONVERSION_TIME, HOUR, H8, None, None)
    state = CellState(samples={"lead>mql": [1_000, 2_000, 3_000, 4_000]})
    changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW)
    # 1 s + 4 s -> 1.5 s + 3.5 s: same sum (10 s), count (4) and median (2.5 s); p90 (rank 4) 4 s -> 3.5 s.
    state.samples["lead>mql"] = [1_500, 2_000, 3_000, 3_500]
    records = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 1000)
    assert [(item.record["revision"], item.record["stats"]["p90"]) for item in records] == [(2, 3.5)]


def test_conversion_time_histogram_change_is_emitted():
    cell = CellId(CONVERSION_TIME, HOUR, H8, None, None)
    state = CellState(samples={"lead>mql": [50_000, 55_000, 1_000_000, 2_000_000, 5_000_000]})
    changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW)
    # 50 s + 55 s -> 40 s + 65 s: same sum, count, median (1000 s) and p90 (5000 s); the "60" bucket goes 2 -> 1.
    state.samples["lead>mql"] = [40_000, 65_000, 1_000_000, 2_000_000, 5_000_000]
    records = changed_records(cell, state, DEFAULT_FUNNEL, "USD", NOW + 1000)
    assert [(item.record["revision"], item.record["stats"]["histogram"]["60"]) for item in records] == [(2, 1)]


def test_roi_worked_example_and_lifetime_value() -> None:
    # KPIS.md: $5,000 on ads yielding $20,000 of sales -> ROI 300 %.
    state = CellState(counts={"lead": 40, "won": 4}, spend_micros=5_000 * USD, sums={"revenue": 20_000 * USD})
    found = by_kpi(changed_records(funnel_cell(), state, DEFAULT_FUNNEL, "USD", NOW, (Decimal("0.05"), Decimal("0.8"))))
    assert found[("roi", None, None)].record["value"] == 3.0
    assert found[("roas", None, None)].record["value"] == 4.0
    assert found[("average_deal_size", None, None)].record["value"] == 5_000.0
    assert found[("cost_per_acquisition", None, None)].record["value"] == 1_250.0
    # Lifetime value: $5,000 per customer x 0.8 margin / 0.05 churn = $80,000; payback 5,000 / 16,000 periods.
    assert found[("customer_lifetime_value", None, None)].record["value"] == 80_000.0
    assert found[("payback_period", None, None)].record["value"] == 0.3125
    without = by_kpi(changed_records(funnel_cell(), CellState(counts={"won": 1}), DEFAULT_FUNNEL, "USD", NOW))
    assert ("customer_lifetime_value", None, None) not in without
