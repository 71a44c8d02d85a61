"""The KPI gauges read the latest window per channel from cells: values by hand, and as the KPI records carry them."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream.core.calendar import MONTH
from stream.core.cells import FUNNEL, CellId, CellState
from stream.core.funnel import DEFAULT_FUNNEL
from stream.core.kpis import changed_records, target_records
from stream.core.targets import Target
from stream.core.windows import utc_windows
from stream.runtime.metrics import ALL, Metrics

HOUR = 3_600_000
USD = 1_000_000


def test_gauges_follow_the_latest_window_and_clear_on_zero_denominators() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry, frozenset(), 20)
    older = CellState(counts={"lead": 10, "mql": 4, "won": 1, "lost": 1}, spend_micros=500 * USD,
                      sums={"revenue": 2_000 * USD})
    newer = CellState(counts={"lead": 20, "mql": 5, "won": 2, "lost": 6}, spend_micros=1_000 * USD,
                      sums={"revenue": 4_000 * USD})
    metrics.show_cells([(CellId(FUNNEL, HOUR, 2 * HOUR, "email", None), newer),
                        (CellId(FUNNEL, HOUR, HOUR, "email", None), older)], DEFAULT_FUNNEL)

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, {"channel": "email", "window": "1h"})

    assert value("leadgen_cost_per_lead") == 50.0  # $1,000 / 20 leads, the newer window
    assert value("leadgen_cost_per_mql") == 200.0
    assert value("leadgen_cost_per_acquisition") == 500.0
    assert value("leadgen_win_ratio") == 0.25  # 2 / (2 + 6)
    assert value("leadgen_return_on_ad_spend_ratio") == 4.0
    nothing_won = CellState(counts={"lead": 3}, spend_micros=100 * USD)
    metrics.show_cells([(CellId(FUNNEL, HOUR, 3 * HOUR, "email", None), nothing_won)], DEFAULT_FUNNEL)
    assert value("leadgen_cost_per_acquisition") is None and value("leadgen_win_ratio") is None
    assert value("leadgen_cost_per_lead") == 33.333333  # money is kept to the micro-unit


# The gauge that shows each KPI record on /metrics (two are named differently).
GAUGE_OF_KPI = {
    "cost_per_lead": "leadgen_cost_per_lead",
    "cost_per_mql": "leadgen_cost_per_mql",
    "cost_per_acquisition": "leadgen_cost_per_acquisition",
    "win_rate": "leadgen_win_ratio",
    "roas": "leadgen_return_on_ad_spend_ratio",
    "conversion_rate": "leadgen_conversion_ratio",
}
EVERY_STAGE = CellState(counts={"lead": 40, "mql": 20, "sal": 10, "sql": 8, "opportunity": 4, "won": 3, "lost": 1},
                        spend_micros=2_000 * USD, sums={"revenue": 9_000 * USD})


def _series(channel: str) -> list[tuple[str, dict[str, str]]]:
    """Every KPI gauge series of one channel's hourly window."""
    series = [(GAUGE_OF_KPI[kpi], {"channel": channel, "window": "1h"})
              for kpi in ("cost_per_lead", "cost_per_mql", "cost_per_acquisition", "win_rate", "roas")]
    series += [(GAUGE_OF_KPI["conversion_rate"], {"from_stage": from_stage, "to_stage": to_stage,
                                                  "channel": channel, "window": "1h"})
               for from_stage, to_stage in zip(DEFAULT_FUNNEL, DEFAULT_FUNNEL[1:], strict=False)]
    return series


def _gauge_series(record: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """The gauge series that shows a KPI record, if one does."""
    name = GAUGE_OF_KPI.get(record["kpi"])
    if name is None:
        return None
    dims = dict(record["dimensions"])
    labels = {"channel": dims.pop("channel", ALL), "window": record["window"]["size"]}
    return name, {**dims, **labels}


@pytest.mark.parametrize(
    ("channel", "state"),
    [
        ("email", EVERY_STAGE),
        (None, EVERY_STAGE),  # all traffic
        ("email", CellState(counts={"lead": 3}, spend_micros=100 * USD)),  # money kept to the micro-unit
        ("email", CellState(counts={"lead": 20, "mql": 5}, spend_micros=1_000 * USD)),  # nothing closed
        ("email", CellState(counts={"lead": 7, "won": 2, "lost": 2}, sums={"revenue": 500 * USD})),  # no spend
        ("email", CellState(counts={"lead": 5, "mql": 4, "sql": 2})),  # a stage skipped: no sal -> sql value
        ("email", CellState(spend_micros=250 * USD)),  # spend, no leads
        ("email", CellState()),  # nothing at all: every gauge cleared
    ],
    ids=["every-stage", "all-traffic", "micro-unit", "nothing-closed", "no-spend", "skipped-stage", "spend-only",
         "empty"],
)
def test_each_gauge_shows_the_value_of_its_kpi_record(channel: str | None, state: CellState) -> None:
    """Gauges and KPI records of one cell state agree; where a record has no value the gauge is cleared."""
    registry = CollectorRegistry()
    metrics = Metrics.create(registry, frozenset(), 20)
    label = channel or ALL
    # An earlier window sets every gauge first, so a value missing later must have been cleared.
    metrics.show_cells([(CellId(FUNNEL, HOUR, HOUR, channel, None), EVERY_STAGE)], DEFAULT_FUNNEL)
    assert all(registry.get_sample_value(name, labels) is not None for name, labels in _series(label))

    cell = CellId(FUNNEL, HOUR, 2 * HOUR, channel, None)
    metrics.show_cells([(cell, state)], DEFAULT_FUNNEL)

    # A record not sent has a zero denominator (and numerator): no value either.
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float | None] = {
        (name, tuple(sorted(labels.items()))): None for name, labels in _series(label)}
    for kpi_record in changed_records(cell, copy.deepcopy(state), DEFAULT_FUNNEL, "USD", 0):
        series = _gauge_series(kpi_record.record)
        if series is not None:
            name, labels = series
            expected[name, tuple(sorted(labels.items()))] = kpi_record.record["value"]
    assert len(expected) == len(_series(label))  # every record shown maps onto a known series
    shown = {key: registry.get_sample_value(key[0], dict(key[1])) for key in expected}
    assert shown == expected


def test_a_cleared_gauge_is_shown_again_when_its_kpi_has_a_value_again() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry, frozenset(), 20)
    labels = {"channel": "email", "window": "1h"}
    states = [CellState(counts={"lead": 4}, spend_micros=100 * USD), CellState(spend_micros=100 * USD),
              CellState(spend_micros=100 * USD), CellState(counts={"lead": 5}, spend_micros=100 * USD)]
    shown = []
    for start, state in enumerate(states, start=1):
        metrics.show_cells([(CellId(FUNNEL, HOUR, start * HOUR, "email", None), state)], DEFAULT_FUNNEL)
        shown.append(registry.get_sample_value("leadgen_cost_per_lead", labels))
    assert shown == [25.0, None, None, 20.0]


def test_target_gauges_show_the_configured_targets_and_the_latest_window_of_each() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry, frozenset(), 20)
    leads = Target("lead_volume", MONTH, (("channel", "paid_search"),), Decimal(150), "at_least")
    step = Target("conversion_rate", MONTH, (("from_stage", "mql"), ("to_stage", "sal")), Decimal("0.3"),
                  "at_least")
    metrics.declare_targets([leads, step])
    labels = {"target_kpi": "lead_volume", "period": "1mo", "bound": "at_least", "channel": "paid_search",
              "campaign": ""}
    assert registry.get_sample_value("leadgen_target", labels) == 150.0
    assert registry.get_sample_value("leadgen_target", {**labels, "target_kpi": "conversion_rate:mql>sal",
                                                        "channel": ALL}) == 0.3
    windows = utc_windows((MONTH,))
    november, october = 1_793_491_200_000, 1_790_812_800_000  # 2026-11-01, 2026-10-01 (UTC)
    shown = []
    for start, (actual, elapsed) in ((november, (75, 0.5)), (october, (140, 1.0))):
        state = CellState(counts={"lead": actual})
        shown += [(leads, record) for record in target_records(
            leads, leads.cell(start), state, DEFAULT_FUNNEL, "USD", 0, windows,
            start + int(elapsed * (windows.end(MONTH, start) - start)))]
    metrics.show_targets(shown)
    assert registry.get_sample_value("leadgen_target_attainment_ratio", labels) == 0.5  # November's, not October's
    assert registry.get_sample_value("leadgen_target_pacing_ratio", labels) == 1.0
    assert registry.get_sample_value("leadgen_target_elapsed_ratio", {"period": "1mo"}) == 0.5
    metrics.forget_targets()  # a rebalance: another worker may own the cells now
    assert registry.get_sample_value("leadgen_target_attainment_ratio", labels) is None
    assert registry.get_sample_value("leadgen_target", labels) == 150.0  # the configured target stays
    metrics.show_targets(shown)
    assert registry.get_sample_value("leadgen_target_attainment_ratio", labels) == 0.5


def test_last_event_time_is_each_topics_last_event_of_the_batch() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry, frozenset(), 20)
    # In batch order; the last event of page-views is on its partition 0, after partition 1's.
    metrics.show_last_event_times([("page-views:0", 5_000), ("page-views:1", 9_000), ("leads:2", 7_000),
                                   ("page-views:0", 3_000), ("leads:2", 8_000)])

    def value(topic: str) -> float | None:
        return registry.get_sample_value("leadgen_last_event_timestamp_seconds", {"topic": topic})

    assert value("page-views") == 3.0  # the last one, not the latest: as when the gauge was set per event
    assert value("leads") == 8.0
    assert value("spend") is None
