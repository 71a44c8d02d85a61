"""The watermark join: the minimum over a known set of sources of the progress each reported, and how a stage
persists it with its table (one record per partition, under ``keys.watermark_key``).

Both the entity stage (over the input partitions, and over its peers) and the cell stage (over the entity
partitions) keep one per partition they own. See ``stream.pipeline.eventtime`` for the whole protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from stream.core import jsonbytes
from stream.core.calendar import UTC_IDENTITY
from stream.pipeline.eventtime.sources import HOLD
from stream.pipeline.keys import watermark_key
from stream.pipeline.state import BatchWrites, Store


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
    # The watermark as last computed, while no report changed the progress since (a stage asks for it per envelope
    # and per delta; ``update`` clears it). Progress set other than by ``update`` must come before the first ask.
    _known: tuple[int | None] | None = field(default=None, repr=False, compare=False)

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
        if changed:
            self._known = None
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
        if self._known is not None:
            return self._known[0]
        if not self.expected or any(source not in self.progress for source in self.expected):
            self._known = (None,)
            return None
        values = [value for value in self.progress.values() if value is not None]
        if values:
            lowest = min(values)
            if self.floor is None or lowest > self.floor:
                self.floor = lowest
        self._known = (self.floor,)
        return self.floor


class StateRefused(RuntimeError):
    """The tables hold state that the settings in force cannot carry on; the message says which and what to do."""


def restore_join(store: Store, partition: int, expected: frozenset[str], name: str = "",
                 idle_timeout_ms: int = 0, calendar: str | None = None) -> WatermarkJoin:
    """The partition's watermark join as last persisted, or a new one.

    Args:
        calendar: the identity of the reporting calendar in force (``Calendar.identity``); given, the state must
            have been made under the same one.

    Raises:
        StateRefused: the state was made under another calendar: its open windows would mix two layouts.
    """
    join = WatermarkJoin(expected, idle_timeout_ms=idle_timeout_ms)
    stored = store.get(watermark_key(partition, name))
    if stored is not None:
        doc = orjson.loads(stored)
        made_under = doc.get("z", UTC_IDENTITY)
        if calendar is not None and made_under != calendar:
            raise StateRefused(_calendar_changed(made_under, calendar))
        join.progress.update(doc["p"])
        join.floor = doc["f"]
        # Absent from what versions before idle sources kept their progress across owners wrote.
        join.moved_ms.update(doc.get("m", {}))
        join.idle.update(doc.get("i", {}))
    return join


def persist_join(writes: BatchWrites, partition: int, join: WatermarkJoin, name: str = "",
                 calendar: str | None = None) -> None:
    """Write the partition's watermark join with the batch, and the calendar its windows are laid out in."""
    doc: dict[str, object] = {"p": join.progress, "f": join.floor, "m": join.moved_ms}
    if join.idle:
        doc["i"] = join.idle
    if calendar is not None and calendar != UTC_IDENTITY:  # UTC state stays as earlier versions wrote it
        doc["z"] = calendar
    writes.set(watermark_key(partition, name), jsonbytes.dumps(doc))


def _calendar_changed(made_under: str, in_force: str) -> str:
    zone, week = made_under.split("|")
    new_zone, new_week = in_force.split("|")
    return (f"this app's state was made with KPI_TIMEZONE={zone} and KPI_WEEK_START={week}, and the worker runs "
            f"with KPI_TIMEZONE={new_zone} and KPI_WEEK_START={new_week}: windows still open would mix two "
            "layouts. Set them back, or run under a new KPI_APP_ID, which reads the input topics from their start "
            "and reports every window again in the new zone, under new record keys (see \"Upgrading\" in the "
            "README)")
