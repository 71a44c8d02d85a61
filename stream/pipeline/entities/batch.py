"""What one batch of the entity stage accumulates, and the output it becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.core.cells import CellDelta, CellId
from stream.core.deadletter import dead_letter, dead_letter_key
from stream.core.events import Reason
from stream.core.funnel import LeadState
from stream.core.visitors import VisitorState
from stream.pipeline.counts import BatchCounts
from stream.pipeline.routing import partition_for
from stream.pipeline.state import BatchWrites, Store
from stream.pipeline.wire import CellDeltaItem, LeadValue


@dataclass(slots=True)
class EntityOutput:
    """One batch's results: cell-delta envelopes per cell partition, dead letters, writes per table."""

    envelopes: dict[int, list[bytes]] = field(default_factory=dict)
    dead_letters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reroutes: dict[int, bytes] = field(default_factory=dict)  # envelopes for other entity partitions
    # Writes to the entity table, in the order they must reach its changelog (see EntityBatch.writes).
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    counts: BatchCounts = field(default_factory=BatchCounts)
    watermark: int | None = None


class EntityBatch:
    """The accumulators of one batch: the states it read and changed, its cell deltas and lead values, its writes,
    counts and dead letters."""

    def __init__(self, table: Store, partitions: int) -> None:
        self.states = BatchWrites(table)  # leads and visitors
        self.seen = BatchWrites(table)  # event ids kept for deduplication
        self.progress = BatchWrites(table)  # watermark joins
        self.leads: dict[bytes, LeadState] = {}  # by key: the lead states read or changed, written at the end
        self.visitors: dict[bytes, VisitorState] = {}  # by key, likewise
        self.deltas: dict[int, list[CellDeltaItem]] = {}  # by cell partition, at the offsets of their envelopes
        self.lead_values: dict[int, list[LeadValue]] = {}  # by the entity partition that owns the visitor
        self.counts = BatchCounts()
        self.dead_letters: list[tuple[str, dict[str, Any]]] = []
        # The current envelope's deltas, one per cell (page views add theirs in place: see ``core.visitors.view``).
        self.envelope_deltas: dict[CellId, CellDelta] = {}
        self._partitions = partitions

    def add_deltas(self, changes: dict[CellId, CellDelta]) -> None:
        """Merge changes into the current envelope's deltas (one per cell per envelope)."""
        pending = self.envelope_deltas
        for cell, delta in changes.items():
            known = pending.get(cell)
            if known is None:
                pending[cell] = delta
            else:
                known.merge(delta)

    def end_envelope(self, offset: int) -> None:
        """One delta per cell per envelope, at the envelope's offset (its position in this partition).

        An envelope is a fixed message, so a replay recomputes the same (or, where state was already persisted,
        a smaller) delta at the same position, which the cell stage recognises and skips.
        """
        for cell, delta in self.envelope_deltas.items():
            if not delta.is_empty():
                target = partition_for(cell.routing_key(), self._partitions)
                self.deltas.setdefault(target, []).append(CellDeltaItem(cell, offset, delta.to_doc()))
        self.envelope_deltas.clear()

    def send_lead_value(self, value: LeadValue) -> None:
        """Send a lead value to the entity partition that owns its visitor."""
        self.lead_values.setdefault(partition_for(value.visitor, self._partitions), []).append(value)

    def reject(self, source: tuple[str, int, int], reason: Reason, detail: str, raw: str, now_ms: int) -> None:
        """Count an input event (by its topic, partition and offset) as rejected and dead-letter it."""
        topic, partition, offset = source
        self.counts.rejected[(topic, str(reason))] += 1
        self.dead_letters.append((dead_letter_key(topic, partition, offset), dead_letter(
            topic, partition, offset, reason, detail, raw, None, now_ms)))

    def output(self) -> EntityOutput:
        """The batch's writes, counts and dead letters; the caller adds the envelopes and the watermark."""
        # State first, then the event ids it took in, then the watermarks: the changelog keeps this order, so a
        # restart that finds an event id finds its effect on the state too (a crash in between is replayed: the
        # ids already written are counted as duplicates, and applying an event to a state that has it already
        # changes nothing), and a restart never judges a replayed event by a watermark its state had not reached.
        writes = {**self.states.take(), **self.seen.take(), **self.progress.take()}
        return EntityOutput(dead_letters=self.dead_letters, writes=writes, counts=self.counts)
