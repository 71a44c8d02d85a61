"""The source clock: per input partition, the maximum event time seen and when it last moved, and the progress
ingest reports for each owned partition (``HOLD``, a time, or None for one with nothing of its own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Progress reported by a source that must hold the watermark back (nothing known yet).
HOLD = 0


@dataclass(slots=True)
class _PartitionProgress:
    max_ts: int
    last_seen_ms: int


@dataclass(slots=True)
class SourceProgress:
    """Per input partition: the maximum event time seen and when (processing time) it last moved."""

    idle_timeout_ms: int
    _partitions: dict[str, _PartitionProgress] = field(default_factory=dict)
    _first_reported: dict[str, int] = field(default_factory=dict)
    # When the partitions with unread messages were last marked (None: never, and idle time runs with the clock).
    _checked_ms: int | None = None

    def observe(self, partition: str, ts: int, now_ms: int) -> None:
        """Record a valid event's time on ``partition``."""
        known = self._partitions.get(partition)
        if known is None:
            self._partitions[partition] = _PartitionProgress(ts, now_ms)
        else:
            known.last_seen_ms = now_ms
            if ts > known.max_ts:
                known.max_ts = ts

    def mark_busy(self, partitions: Iterable[str], now_ms: int) -> None:
        """``partitions`` have messages not read yet: none of them is idle, nor starts being idle, before now.

        Once marked, idle time runs only up to the last mark: while the marking stops (its timer blocked on a
        broker that stalls, or the process paused) nothing is known to be idle that was not before.
        """
        self._checked_ms = now_ms if self._checked_ms is None else max(self._checked_ms, now_ms)
        for partition in partitions:
            known = self._partitions.get(partition)
            if known is None:
                self._first_reported[partition] = now_ms
            elif now_ms > known.last_seen_ms:
                known.last_seen_ms = now_ms

    def forget(self, partitions: Iterable[str]) -> None:
        """Drop partitions this worker no longer owns."""
        for partition in partitions:
            self._partitions.pop(partition, None)
            self._first_reported.pop(partition, None)

    def report_after(self, observed: Iterable[tuple[str, int]], owned: Iterable[str], now_ms: int
                     ) -> dict[str, int | None]:
        """The report as it will be once ``observed`` (partition, event time) is recorded, leaving this as it is.

        The messages that carry a batch's events carry this report too, so that progress is never behind the
        input offsets a batch commits: a worker stopped after its last batch of a partition must not take the
        progress of those events with it, as the next owner finds nothing more to read there.
        """
        ahead = SourceProgress(self.idle_timeout_ms,
                               {name: _PartitionProgress(known.max_ts, known.last_seen_ms)
                                for name, known in self._partitions.items()},
                               dict(self._first_reported), self._checked_ms)
        for partition, ts in observed:
            ahead.observe(partition, ts, now_ms)
        return ahead.report(owned, now_ms)

    def report(self, owned: Iterable[str], now_ms: int) -> dict[str, int | None]:
        """Progress of each owned partition: HOLD, then None, for one that has never had an event."""
        report: dict[str, int | None] = {}
        until = now_ms if self._checked_ms is None else min(now_ms, self._checked_ms)
        for partition in owned:
            known = self._partitions.get(partition)
            if known is None:
                since = self._first_reported.setdefault(partition, now_ms)
                report[partition] = HOLD if until - since < self.idle_timeout_ms else None
                continue
            idle_for = until - known.last_seen_ms - self.idle_timeout_ms
            report[partition] = known.max_ts + idle_for if idle_for > 0 else known.max_ts
        return report
