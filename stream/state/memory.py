"""The tables' stores: ``KPI_STORE=memory://``, one dict per partition, and ``KPI_STORE=disk://``
(``stream.state.disk``), local RocksDB files a restarted worker reuses.

Both know each key's partition, so that a worker drops the keys of the partitions it gave up. Faust's in-memory
store knows it through a second dict of every key (as large as the data's own dict on the lead-heavy million,
42 MB); ``memory://`` here keeps one dict per partition instead, so the partition is where the key is.

Both know the changelog offset their data reflects, per partition (``stream.state.checkpoints``), so that table
recovery after a rebalance reads only the changelog past it: for the memory store, the partitions this worker
kept (active or standby) through the rebalance; for the disk store, also what the files held when it started.

The agents write whole batches to a table's data and changelog themselves (``stream.runtime.faust_output``), so
a store must not file a write under the partition of "the current stream event", as Faust's own RocksDB store does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from faust.stores import memory as faust_memory
from faust.types import TP, EventT

from stream.state.checkpoints import kept_partitions, last_offsets


class PartitionedData(MutableMapping[bytes, bytes]):
    """A table's keys and values, in one dict per partition.

    A lookup tries each partition's dict in turn (a few, ``KPI_PARTITIONS``), which costs little beside the
    stages' work per event; a key written with ``put`` leaves any other partition's dict. A new key cannot be
    set without its partition.
    """

    def __init__(self) -> None:
        self.parts: dict[int, dict[bytes, bytes]] = {}

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Set ``key`` in ``partition``."""
        part = self.parts.get(partition)
        if part is None:
            part = self.parts[partition] = {}
        if key not in part:
            for other in self.parts.values():
                other.pop(key, None)
        part[key] = value

    def partition_of(self, key: bytes) -> int | None:
        for partition, part in self.parts.items():
            if key in part:
                return partition
        return None

    def keep_only(self, partitions: set[int]) -> None:
        """Drop every key of the other partitions."""
        for partition in [p for p in self.parts if p not in partitions]:
            del self.parts[partition]

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes | None = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        for part in self.parts.values():
            value = part.get(key)
            if value is not None:
                return value
        return default

    def __contains__(self, key: object) -> bool:
        return any(key in part for part in self.parts.values())

    def __setitem__(self, key: bytes, value: bytes) -> None:
        partition = self.partition_of(key)
        if partition is None:
            raise KeyError(f"{key!r} is not stored yet: a new key is stored with its partition (put)")
        self.parts[partition][key] = value

    def __delitem__(self, key: bytes) -> None:
        partition = self.partition_of(key)
        if partition is None:
            raise KeyError(key)
        del self.parts[partition][key]

    def __iter__(self) -> Iterator[bytes]:
        for part in list(self.parts.values()):
            yield from part

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts.values())

    def items(self) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[override]
        for part in list(self.parts.values()):
            yield from part.items()

    def clear(self) -> None:
        self.parts.clear()


class MemoryStore(faust_memory.Store[bytes, bytes]):
    """Faust's in-memory table store, its data kept in one dict per partition (``PartitionedData``), with the
    changelog offset each partition's data reflects."""

    def __post_init__(self) -> None:
        self.data: PartitionedData = PartitionedData()
        self.offsets: dict[int, int] = {}

    def _changelog(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def persisted_offset(self, tp: TP) -> int | None:
        """The offset of the last changelog record the data holds for ``tp``'s partition (None: none)."""
        return self.offsets.get(tp.partition) if tp.topic == self._changelog() else None

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Not used: the offsets are noted with the data (``commit``, ``apply_changelog_batch``)."""

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Note the changelog offsets of a batch's writes, their sends delivered (the data was set by ``put``)."""
        self.offsets.update(offsets)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Set ``key`` in ``partition``: what the agents' writes do (``stream.runtime.faust_output._write``)."""
        self.data.put(key, value, partition)

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; whether it was there."""
        return self.data.pop(key, None) is not None

    def partition_of(self, key: bytes) -> int | None:
        return self.data.partition_of(key)

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        """Apply changelog records in order: a value sets its key in the record's partition, a tombstone
        deletes it."""
        data = self.data
        seen: list[tuple[int, int]] = []
        for event in batch:
            key = to_key(event.key)
            message = event.message
            if message.value is None:
                data.pop(key, None)
            else:
                data.put(key, to_value(event.value), message.partition)
            seen.append((message.partition, message.offset))
        self.offsets.update(last_offsets(seen))

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop the keys and offsets of the partitions neither active nor standby here."""
        kept = kept_partitions(self._changelog(), active_tps, standby_tps)
        self.data.keep_only(kept)
        for partition in [p for p in self.offsets if p not in kept]:
            del self.offsets[partition]

