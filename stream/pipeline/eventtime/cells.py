"""The cell clock: a cell partition's watermark, the minimum over the entity partitions of what each reported
after its deltas (``CellEnvelope.watermark``), kept in the cell table with the calendar its windows are laid out
in."""

from __future__ import annotations

from dataclasses import dataclass

from stream.pipeline.eventtime.join import WatermarkJoin, persist_join, restore_join
from stream.pipeline.state import BatchWrites, Store


@dataclass(slots=True)
class CellClock:
    """How far a cell partition's windows may close."""

    join: WatermarkJoin  # over every entity partition
    calendar: str  # the reporting calendar its windows are laid out in (``Calendar.identity``)

    @staticmethod
    def restore(table: Store, partition: int, entity_partitions: int, calendar: str) -> CellClock:
        """The partition's clock as last persisted, or a new one.

        Raises:
            StateRefused: the state was made under another calendar.
        """
        sources = frozenset(str(source) for source in range(entity_partitions))
        return CellClock(restore_join(table, partition, sources, calendar=calendar), calendar)

    def hear(self, writes: BatchWrites, partition: int, source: int, watermark: int, now_ms: int) -> None:
        """Take the watermark an entity partition reported after its deltas, persisting the join when it moves."""
        if self.join.update({str(source): watermark}, now_ms):
            persist_join(writes, partition, self.join, calendar=self.calendar)

    def watermark(self) -> int | None:
        """The partition's watermark (None until every entity partition has reported)."""
        return self.join.watermark()
