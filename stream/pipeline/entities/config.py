"""What the entity stage needs from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.visitors import AttributionConfig
from stream.core.windows import Windows


@dataclass(frozen=True, slots=True)
class EntityConfig:
    """What the entity stage needs from the settings."""

    partitions: int
    sources: frozenset[str]
    windows: Windows
    allowed_lateness_ms: int
    funnel: tuple[str, ...]
    dedup_retention_ms: int
    unknown_lead_timeout_ms: int
    cohort_window_ms: int = 90 * 86_400_000
    attribution: AttributionConfig = AttributionConfig(90 * 86_400_000, 7 * 86_400_000, 100)
    # After which an input partition whose owner has no event of it advances from its progress (WatermarkJoin).
    idle_partition_timeout_ms: int = 10_000
    # At least this often (processing time) every cell partition hears the watermark, moved or not: a cell's held
    # records go out at its next batch after the hold (``stream.pipeline.pacing``). 0: only when it moves.
    cell_report_interval_ms: int = 0
