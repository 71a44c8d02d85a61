"""The three stages built from the settings, in one place for every runner (the app, ``LocalFlow``, the
scheduled test flow)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stream.core.calendar import Calendar
from stream.core.targets import Target, load_targets
from stream.core.validation import Validator
from stream.core.visitors import AttributionConfig
from stream.core.windows import Windows
from stream.pipeline.cells import CellConfig, CellStage
from stream.pipeline.entities import EntityConfig, EntityStage
from stream.pipeline.ingest import IngestStage
from stream.pipeline.routing import source_name
from stream.pipeline.state import Store
from stream.settings import Settings


@dataclass(slots=True)
class Stages:
    """The three stage objects of one worker (or one in-memory flow)."""

    ingest: IngestStage
    entities: EntityStage
    cells: CellStage


def build_stages(settings: Settings, input_partitions: Mapping[str, int], entity_table: Store, cell_table: Store
                 ) -> Stages:
    """The stages over the given tables.

    Args:
        settings: the service settings.
        input_partitions: partition count of each input topic (the watermark waits for all of them).
        entity_table: the entity stage's table.
        cell_table: the cell stage's table.
    """
    sources = frozenset(source_name(topic, p) for topic in settings.input_topics.values()
                        for p in range(input_partitions[topic]))
    return Stages(IngestStage(Validator(settings.rates, settings.max_event_bytes), settings.partitions,
                              settings.idle_partition_timeout_ms, settings.max_future_skew_ms),
                  EntityStage(entity_config(settings, sources), entity_table),
                  CellStage(cell_config(settings), cell_table))


def windows(settings: Settings) -> Windows:
    """The window sizes laid out in the reporting time zone (each stage its own: a calendar remembers windows)."""
    return Windows.of(settings.window_sizes, Calendar(settings.timezone, settings.week_start), settings.trailing_days)


def entity_config(settings: Settings, sources: frozenset[str]) -> EntityConfig:
    """What the entity stage takes from the settings, given every input partition's name."""
    return EntityConfig(settings.partitions, sources, windows(settings), settings.allowed_lateness_ms,
                        settings.funnel, settings.dedup_retention_ms, settings.unknown_lead_timeout_ms,
                        settings.cohort_window_ms,
                        AttributionConfig(settings.attribution_lookback_ms, settings.attribution_half_life_ms,
                                          settings.touch_limit), settings.idle_partition_timeout_ms,
                        settings.record_interval_ms)


def cell_config(settings: Settings) -> CellConfig:
    """What the cell stage takes from the settings."""
    economics = None
    if settings.churn_rate is not None and settings.gross_margin is not None:
        economics = (settings.churn_rate, settings.gross_margin)
    return CellConfig(settings.partitions, windows(settings), settings.allowed_lateness_ms, settings.funnel,
                      settings.rates.reporting_currency, settings.cohort_window_ms, economics, settings.value_limit,
                      targets_of(settings), settings.record_interval_ms)


def targets_of(settings: Settings) -> tuple[Target, ...]:
    """The targets of ``KPI_TARGETS_FILE`` (none without one).

    Raises:
        TargetsError: the file cannot be used (the message names the file, the target and the rule).
    """
    return load_targets(settings.targets_file, settings.window_sizes, settings.funnel)
