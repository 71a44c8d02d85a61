"""Tests for stream.stages: each stage's configuration carries the settings it depends on."""

from decimal import Decimal

import pytest

from stream.core.visitors import AttributionConfig
from stream.settings import Settings
from stream.stages import cell_config, entity_config

HOUR = 3_600_000
DAY = 24 * HOUR
SOURCES = frozenset({"leads:0", "page-views:0"})


@pytest.fixture(scope="module")
def tuned():
    return Settings.from_env({
        "KPI_PARTITIONS": "3", "KPI_WINDOW_SIZES": "1h", "KPI_ALLOWED_LATENESS": "5m", "KPI_FUNNEL": "lead,mql,won",
        "KPI_DEDUP_RETENTION": "2d", "KPI_UNKNOWN_LEAD_TIMEOUT": "3h", "KPI_COHORT_WINDOW": "30d",
        "KPI_ATTRIBUTION_LOOKBACK": "14d", "KPI_ATTRIBUTION_HALF_LIFE": "2d", "KPI_TOUCH_HISTORY_LIMIT": "7",
        "KPI_REPORTING_CURRENCY": "EUR", "KPI_VALUE_LIMIT": "9", "KPI_CHURN_RATE": "0.03", "KPI_GROSS_MARGIN": "0.8",
        "KPI_TIMEZONE": "Asia/Kolkata", "KPI_WEEK_START": "sunday",
    })


def test_entity_config_takes_every_entity_setting(tuned):
    config = entity_config(tuned, SOURCES)
    assert (config.partitions, config.sources, config.windows.sizes, config.allowed_lateness_ms) == (
        3, SOURCES, (HOUR,), 5 * 60_000)
    assert (config.windows.calendar.zone_name, config.windows.calendar.week_start) == ("Asia/Kolkata", 6)
    assert config.idle_partition_timeout_ms == 10_000
    assert config.funnel == ("lead", "mql", "won")
    assert (config.dedup_retention_ms, config.unknown_lead_timeout_ms, config.cohort_window_ms) == (
        2 * DAY, 3 * HOUR, 30 * DAY)
    assert config.attribution == AttributionConfig(14 * DAY, 2 * DAY, 7)


def test_cell_config_takes_every_cell_setting(tuned):
    config = cell_config(tuned)
    assert (config.partitions, config.windows.sizes, config.allowed_lateness_ms) == (3, (HOUR,), 5 * 60_000)
    assert config.windows.calendar.zone_name == "Asia/Kolkata"
    assert (config.funnel, config.reporting_currency, config.cohort_window_ms) == (
        ("lead", "mql", "won"), "EUR", 30 * DAY)
    assert config.economics == (Decimal("0.03"), Decimal("0.8"))
    assert config.value_limit == 9


@pytest.mark.parametrize("env", [{}, {"KPI_CHURN_RATE": "0.03"}, {"KPI_GROSS_MARGIN": "0.8"}],
                         ids=["neither", "churn-only", "margin-only"])
def test_lifetime_value_needs_both_churn_and_margin(env):
    assert cell_config(Settings.from_env(env)).economics is None
