"""The KPI gauges read the latest window per channel from cells, values computed by hand."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream.core.cells import FUNNEL, CellId, CellState
from stream.core.funnel import DEFAULT_FUNNEL
from stream.metrics import Metrics

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
