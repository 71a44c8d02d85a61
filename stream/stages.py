"""The stages' configurations, built from the settings where the worker is wired (the app, ``LocalFlow``)."""

from __future__ import annotations

from stream.core.visitors import AttributionConfig
from stream.pipeline.cells import CellConfig
from stream.pipeline.entities import EntityConfig
from stream.settings import Settings


def entity_config(settings: Settings, sources: frozenset[str]) -> EntityConfig:
    """What the entity stage takes from the settings, given every input partition's name."""
    return EntityConfig(settings.partitions, sources, settings.window_sizes_ms, settings.allowed_lateness_ms,
                        settings.funnel, settings.dedup_retention_ms, settings.unknown_lead_timeout_ms,
                        settings.cohort_window_ms,
                        AttributionConfig(settings.attribution_lookback_ms, settings.attribution_half_life_ms,
                                          settings.touch_limit))


def cell_config(settings: Settings) -> CellConfig:
    """What the cell stage takes from the settings."""
    economics = None
    if settings.churn_rate is not None and settings.gross_margin is not None:
        economics = (settings.churn_rate, settings.gross_margin)
    return CellConfig(settings.partitions, settings.window_sizes_ms, settings.allowed_lateness_ms, settings.funnel,
                      settings.rates.reporting_currency, settings.cohort_window_ms, economics, settings.value_limit)
