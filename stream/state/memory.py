"""``KPI_STORE=memory://``: a table's keys and values in one dict per partition, restored from the changelog at
every start.

A store knows each key's partition, so that a worker drops the keys of the partitions it gave up
(``stream.state.base``). Faust's in-memory store knows it through a second dict of every key (as large as the
data's own dict on the lead-heavy million, 42 MB); this one keeps one dict per partition instead, so the
partition is where the key is. The offsets it holds let recovery after a rebalance read only the changelog past
them for the partitions this worker kept (active or standby) through the rebalance.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from stream.state.base import TableData, TableStore, Write


class PartitionedData(TableData):
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

    def drop(self, partitions: set[int]) -> None:
        """Drop every key of ``partitions``."""
        for partition in partitions:
            self.parts.pop(partition, None)

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


class MemoryStore(TableStore):
    """``KPI_STORE=memory://``: the table's data in one dict per partition (``PartitionedData``), with the
    changelog offset each partition's data reflects."""

    def __post_init__(self) -> None:
        self.data: PartitionedData = PartitionedData()
        self.offsets: dict[int, int] = {}

    def _offset(self, partition: int) -> int | None:
        return self.offsets.get(partition)

    def _stage(self, key: bytes, value: bytes | None, partition: int) -> None:
        # Straight into the dicts: nothing outlives the process, so there is nothing to write atomically.
        if value is None:
            self.data.pop(key, None)
        else:
            self.data.put(key, value, partition)

    def _commit(self, offsets: Mapping[int, int]) -> None:
        self.offsets.update(offsets)

    def _restore(self, writes: Iterable[Write], offsets: Mapping[int, int]) -> None:
        for key, value, partition in writes:
            self._stage(key, value, partition)
        self.offsets.update(offsets)

    def _held_partitions(self) -> set[int]:
        return set(self.data.parts) | set(self.offsets)

    def _drop(self, partitions: set[int]) -> None:
        self.data.drop(partitions)
        for partition in partitions:
            self.offsets.pop(partition, None)
