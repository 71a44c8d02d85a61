"""What a stage over partitioned input promises (``PartitionStage``), and the owned partitions' indexes the
entity and cell stages both keep (``OwnedIndexes``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

Output_co = TypeVar("Output_co", covariant=True)
Index = TypeVar("Index")


class PartitionStage(Protocol[Output_co]):
    """A stage reading an internal topic's partitions: the entity and the cell stage.

    The runtime calls ``assign`` with every partition it owns after a rebalance and ``forget`` with those it gave
    up (``stream.runtime.rebalance`` says when); ``process`` handles one partition's messages of a batch.
    """

    def assign(self, partitions: Iterable[int]) -> None:
        """Note the partitions now owned (indexed at the first batch after, in one scan of the table)."""

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is kept in memory for partitions no longer owned (their table keys are the store's)."""

    def process(self, partition: int, envelopes: list[tuple[int, bytes]], now_ms: int) -> Output_co:
        """Handle the (offset, value) messages read from one partition, in offset order."""


class OwnedIndexes(Generic[Index]):
    """The partitions a stage owns and the in-memory index it keeps of each.

    An index is built from the stage's table the first time a partition is batched after an assignment; that
    one scan of the table indexes every owned partition not indexed yet (``unindexed``), whose keys change only
    through their own batches, which come after.
    """

    def __init__(self) -> None:
        self._indexes: dict[int, Index] = {}
        self._assigned: set[int] = set()

    def assign(self, partitions: Iterable[int]) -> None:
        """The partitions owned from now on (a rebalance assigns all of them again)."""
        self._assigned = set(partitions)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the indexes of partitions no longer owned."""
        for partition in partitions:
            self._indexes.pop(partition, None)
            self._assigned.discard(partition)

    def get(self, partition: int) -> Index | None:
        """The partition's index, or None before it is built."""
        return self._indexes.get(partition)

    def unindexed(self, partition: int) -> set[int]:
        """``partition`` and every other owned partition without an index: what one scan should index."""
        return {p for p in {partition} | self._assigned if p not in self._indexes}

    def add(self, built: dict[int, Index]) -> None:
        """Indexes built by a scan."""
        self._indexes.update(built)

    def values(self) -> Iterator[Index]:
        """The indexes built so far."""
        return iter(self._indexes.values())
