"""What a batch did, counted, for the metrics layer to publish (keeps the stages free of Prometheus)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")


@dataclass(slots=True)
class BatchCounts:
    """Counter increments produced by one batch, keyed by label tuples."""

    valid: Counter[str] = field(default_factory=Counter)  # topic
    duplicate: Counter[str] = field(default_factory=Counter)  # topic
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic, reason)
    leads: Counter[tuple[str, str | None]] = field(default_factory=Counter)  # (channel, campaign)
    stage_entries: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, channel)
    spend_micros: Counter[tuple[str, str | None]] = field(default_factory=Counter)  # (channel, campaign)
    late_contributions: Counter[str] = field(default_factory=Counter)  # cell family
    replayed_deltas: int = 0
    folded_deltas: int = 0  # deltas whose value went to an ``other`` cell (the value limit)
    conversion_samples: list[tuple[str, str, str, int]] = field(default_factory=list)  # from, to, channel, ms

    def merge(self, other: BatchCounts) -> None:
        """Add another batch's counts to these."""
        _add(self.valid, other.valid)
        _add(self.duplicate, other.duplicate)
        _add(self.rejected, other.rejected)
        _add(self.leads, other.leads)
        _add(self.stage_entries, other.stage_entries)
        _add(self.spend_micros, other.spend_micros)
        _add(self.late_contributions, other.late_contributions)
        self.replayed_deltas += other.replayed_deltas
        self.folded_deltas += other.folded_deltas
        self.conversion_samples.extend(other.conversion_samples)


def _add(mine: Counter[K], theirs: Counter[K]) -> None:
    # Most of a batch's counters are empty, and Counter.update is Python: a small batch merges often.
    if theirs:
        mine.update(theirs)
