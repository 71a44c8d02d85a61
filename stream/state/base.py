"""The one contract every table store keeps: Faust's store hooks and the agents' writes, written once here on
the few things a backend provides (``TableStore``'s abstract methods).

What a store does for Faust and the agents, whatever holds its data:

- the agents' writes of a batch (``put``, ``delete``) are read at once, and kept with the changelog offset of
  each partition by ``commit`` once their changelog sends are delivered (``stream.runtime.faust_output``);
- records restored from the changelog (``apply_changelog_batch``) are applied in order and kept with the offset
  of the last one per partition, in one step;
- ``persisted_offset`` tells table recovery where the data stands, so that it reads only the changelog past it
  (``stream.state.checkpoints``);
- once a recovery completes, the keys and offsets of the partitions neither active nor standby here are dropped.

Each key's partition is known to the store, not taken from "the current stream event" as Faust's own stores
do: the agents write whole batches, and a write names its partition.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from faust.stores import memory as faust_memory
from faust.types import TP, EventT

from stream.state.checkpoints import kept_partitions, last_offsets

# A write: key, value (None: the key's deletion), changelog partition.
Write = tuple[bytes, bytes | None, int]


class TableData(MutableMapping[bytes, bytes]):
    """A store's keys and values as Faust and the stages read them, the running batch's writes included."""

    @abstractmethod
    def partition_of(self, key: bytes) -> int | None:
        """The changelog partition of ``key`` (None: not stored)."""


class TableStore(faust_memory.Store[bytes, bytes]):
    """A Faust table store keeping the contract above on a backend's ``data`` and abstract methods."""

    data: TableData

    # -- what a backend provides ------------------------------------------------------------------------------

    @abstractmethod
    def _offset(self, partition: int) -> int | None:
        """The offset of the last changelog record the data holds for ``partition`` (None: none)."""

    @abstractmethod
    def _stage(self, key: bytes, value: bytes | None, partition: int) -> None:
        """Add a write (None: a deletion) to the running batch: read at once, kept by the next ``_commit``."""

    @abstractmethod
    def _commit(self, offsets: Mapping[int, int]) -> None:
        """Keep the running batch's writes with the changelog offsets of their partitions, in one step."""

    @abstractmethod
    def _restore(self, writes: Iterable[Write], offsets: Mapping[int, int]) -> None:
        """Apply restored writes in order, with the offset of the last record of each partition, in one step."""

    @abstractmethod
    def _held_partitions(self) -> set[int]:
        """The partitions the store may hold keys or an offset of (more is allowed: it costs a ``_drop``)."""

    @abstractmethod
    def _drop(self, partitions: set[int]) -> None:
        """Delete every key and the offset of ``partitions``."""

    # -- what Faust and the agents call ---------------------------------------------------------------------

    def _changelog(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def persisted_offset(self, tp: TP) -> int | None:
        """The offset of the last changelog record the data holds for ``tp``'s partition (None: none)."""
        return self._offset(tp.partition) if tp.topic == self._changelog() else None

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Not used: the offsets are kept with the data (``commit``, ``apply_changelog_batch``)."""

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Set ``key`` in ``partition``: what the agents' writes do (``stream.runtime.faust_output._write``)."""
        self._stage(key, value, partition)

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; whether it was there."""
        partition = self.data.partition_of(key)
        if partition is None:
            return False
        self._stage(key, None, partition)
        return True

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Keep the batch's writes, their sends delivered, with the last changelog offset of each partition
        (partitions without a known offset keep theirs: the records past it are read again, to the same state)."""
        self._commit(offsets)

    def partition_of(self, key: bytes) -> int | None:
        """The changelog partition of ``key`` (None: not stored)."""
        return self.data.partition_of(key)

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        """Apply changelog records in order (a value sets its key in the record's partition, a tombstone deletes
        it), kept with the offset of the last record of each partition."""
        events = list(batch)
        if not events:
            return
        offsets = last_offsets((event.message.partition, event.message.offset) for event in events)
        self._restore(((to_key(event.key), None if event.message.value is None else to_value(event.value),
                        event.message.partition) for event in events), offsets)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop the keys and offsets of the partitions neither active nor standby here."""
        given_up = self._held_partitions() - kept_partitions(self._changelog(), active_tps, standby_tps)
        if given_up:
            self._drop(given_up)
