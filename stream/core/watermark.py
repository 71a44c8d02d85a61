"""Event-time watermarks: per-partition progress at the source, and the minimum over every source downstream.

As in Flink, a watermark is the minimum over input partitions of each one's
own maximum event time, so a partition read ahead of the others on a backlog
does not make their events late. A partition with no new events for
``idle_timeout_ms`` of processing time stops holding the others back: its
progress then advances with the processing clock from its last event time.
A partition that has had no event since its current owner took it (ever, or
since a restart or a rebalance) holds the watermark for ``idle_timeout_ms``
after it was first reported (its events may simply not be fetched yet), then
its owner reports it as None: downstream, the join keeps the progress its
previous owners reported and advances it as an idle partition's, and leaves
out only a partition that never had any (:class:`WatermarkJoin`). A change of
owner thus moves no window: page views appended to a partition idle at a
rebalance are exactly as late as they would have been without it.

Idle means caught up: a partition whose messages are there but not yet read
(a backlog read unevenly, or a broker that stalled) is marked busy
(:meth:`SourceProgress.mark_busy`), and its idle time counts only from when it
was last known to have nothing more to read. Otherwise a stall longer than the
timeout would let the others' progress close windows that its unread events
still belong to.
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


@dataclass(slots=True)
class WatermarkJoin:
    """The minimum over a known set of sources of the progress each has reported.

    Progress per source only moves forward (a restarted upstream re-reading
    old events cannot pull the watermark back), and the watermark holds until
    every expected source has reported at least once. A source reporting HOLD
    holds it. A source reporting None has had no event since its current owner
    took it and has nothing left to read: one that never had any progress is
    left out of the minimum, and one that had (its previous owner's, before a
    rebalance or a restart) stays in it, advancing from where it was with the
    processing clock as an idle source does (see :class:`SourceProgress`), so a
    change of owner moves nobody's windows: its progress is ``base`` plus the
    processing time since its last reported move beyond ``idle_timeout_ms``,
    counted only up to its owner's latest None (the time its owner last found
    nothing to read there).
    """

    expected: frozenset[str]
    progress: dict[str, int | None] = field(default_factory=dict)
    # The watermark never goes back, even when a source that had no events starts having old ones.
    floor: int | None = None
    idle_timeout_ms: int = 0
    # Processing time at which each source's reported progress last moved.
    moved_ms: dict[str, int] = field(default_factory=dict)
    # Sources whose owner has no event of its own, by the progress they had when it said so (their base).
    idle: dict[str, int] = field(default_factory=dict)

    def update(self, reports: dict[str, int | None], now_ms: int) -> bool:
        """Take reports received at processing time ``now_ms``; True when the join's state changed."""
        changed = False
        for source, value in reports.items():
            if source not in self.expected:
                continue
            if source not in self.progress:
                self.progress[source] = value
                if value is not None:
                    self.moved_ms[source] = now_ms
                changed = True
                continue
            known = self.progress[source]
            if value is None:
                changed |= self._idle(source, known, now_ms)
            elif value == HOLD and known is not None:
                continue  # its new owner knows nothing yet: what is known stays, without advancing
            else:
                if self.idle.pop(source, None) is not None:
                    self.moved_ms[source] = now_ms  # has events again: idle time counts anew from here
                    changed = True
                if known is None or value > known:
                    self.progress[source] = value
                    self.moved_ms[source] = now_ms
                    changed = True
        return changed

    def _idle(self, source: str, known: int | None, now_ms: int) -> bool:
        """A None report: left out without any progress known, else advancing from it with the clock."""
        if known is None or known == HOLD:
            # Never had an event under any owner: it stops holding the others back until it has one.
            self.progress[source] = None
            self.idle.pop(source, None)
            return known is not None
        newly = source not in self.idle
        base = self.idle.setdefault(source, known)
        # State written before this version has no time of the last move: idle time counts from now.
        moved = self.moved_ms.setdefault(source, now_ms)
        advanced = base + max(0, now_ms - moved - self.idle_timeout_ms)
        if advanced > known:
            self.progress[source] = advanced
            return True
        return newly

    def watermark(self) -> int | None:
        """The watermark, or None while it is unknown (some source silent, or none has any event)."""
        if not self.expected or any(source not in self.progress for source in self.expected):
            return None
        values = [value for value in self.progress.values() if value is not None]
        if values:
            lowest = min(values)
            if self.floor is None or lowest > self.floor:
                self.floor = lowest
        return self.floor


def is_closed(window_end: int, watermark: int | None, allowed_lateness_ms: int) -> bool:
    """A window is final once the watermark has passed its end plus the allowed lateness."""
    return watermark is not None and window_end + allowed_lateness_ms <= watermark
