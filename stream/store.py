"""The tables' stores: ``KPI_STORE=memory://``, one dict per partition, and ``KPI_STORE=disk://``, the keys and
values in local RocksDB files (rocksdict) instead of Python dicts.

Both know each key's partition, so that a worker drops the keys of the partitions it gave up. Faust's in-memory
store knows it through a second dict of every key (as large as the data's own dict on the lead-heavy million,
42 MB); ``memory://`` here keeps one dict per partition instead, so the partition is where the key is.

The agents write whole batches to a table's data and changelog themselves (``stream.runtime.faust_output``), so
a store must not file a write under the partition of "the current stream event", as Faust's own RocksDB store does.
This one keeps one key space per table, like the in-memory store, and differs from it only in where the bytes
live: worker memory then holds the stages' own indexes, not every lead, visitor, event id and cell.

The files are a cache of the changelog, not a second source of truth: each worker process starts with empty
files of its own (``<KPI_DATA_DIR>/tables/disk-<pid>-<table>``) and restores them from the changelog, as the
in-memory store does, and deletes them when the process exits. Files left by a process that was killed are
deleted by the next worker started with the same data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, cast

from faust.stores import STORES
from faust.stores import memory as faust_memory
from faust.types import TP, EventT
from rocksdict import Options, Rdict

PREFIX = "disk-"
_PARTITION_BYTES = 4


def _options() -> Any:
    """Raw bytes in and out (no pickling); write buffers bounded, so memory stays small whatever the data."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(8 * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    return options


class DiskMapping(MutableMapping[bytes, bytes]):
    """A mapping of bytes to bytes in a RocksDB directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Rdict(str(path), _options())

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes | None = self._db.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        """The value, or ``default``: one read, where the mixin's would take two."""
        value = self._db.get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._db[key] = value

    def __delitem__(self, key: bytes) -> None:
        if self._db.get(key) is None:
            raise KeyError(key)
        del self._db[key]

    def pop(self, key: bytes, *default: Any) -> Any:
        """Remove ``key`` and return its value (else ``default``, or KeyError): one read, where the mixin's
        would take three (a changelog replay deletes every tombstoned key this way)."""
        value = self._db.get(key)
        if value is None:
            if default:
                return default[0]
            raise KeyError(key)
        del self._db[key]
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._db.get(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        return cast(Iterator[bytes], iter(self._db.keys()))

    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())

    def items(self) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[override]
        """Every (key, value), in key order, without a second read per key."""
        return cast(Iterator[tuple[bytes, bytes]], iter(self._db.items()))

    def clear(self) -> None:
        """Remove every key."""
        for key in list(self._db.keys()):
            del self._db[key]

    def close(self) -> None:
        """Close the files (the mapping cannot be used after)."""
        self._db.close()


class _PartitionMapping(MutableMapping[bytes, int]):
    """Key -> changelog partition, as Faust's in-memory store keeps it to drop revoked partitions' keys."""

    def __init__(self, data: DiskMapping) -> None:
        self.data = data

    def __getitem__(self, key: bytes) -> int:
        return int.from_bytes(self.data[key], "big")

    def __setitem__(self, key: bytes, partition: int) -> None:
        self.data[key] = partition.to_bytes(_PARTITION_BYTES, "big")

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def items(self) -> Iterator[tuple[bytes, int]]:  # type: ignore[override]
        """Every (key, partition)."""
        return ((key, int.from_bytes(value, "big")) for key, value in self.data.items())


def _owner_alive(directory: Path) -> bool:
    """Whether the process that made a store directory (named ``disk-<pid>-<table>``) still runs."""
    try:
        pid = int(directory.name.removeprefix(PREFIX).split("-", 1)[0])
    except ValueError:
        return True  # not ours: leave it
    if pid == os.getpid():
        return True  # this process's other tables (a directory of its own name is emptied before use anyway)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(tables_dir: Path) -> list[Path]:
    """Delete the store directories of processes that no longer run; the ones deleted."""
    removed = []
    if tables_dir.is_dir():
        for directory in tables_dir.glob(f"{PREFIX}*"):
            if directory.is_dir() and not _owner_alive(directory):
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory)
    return removed


class DiskStore(faust_memory.Store[bytes, bytes]):
    """Faust's in-memory table store, with its two mappings on disk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the in-memory store's dicts, replaced below once app and name are set
        tables_dir = Path(self.app.conf.tabledir)
        tables_dir.mkdir(parents=True, exist_ok=True)
        remove_orphans(tables_dir)
        self.directory = tables_dir / f"{PREFIX}{os.getpid()}-{self.table_name}"
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir()
        self._values = DiskMapping(self.directory / "data")
        self._partitions = DiskMapping(self.directory / "partitions")
        self.data: MutableMapping[bytes, bytes] = self._values
        self.key_partitions: MutableMapping[bytes, int] = _PartitionMapping(self._partitions)
        # At exit, not when Faust stops the table: it stops tables before the agents, whose last batches still
        # write to them (a batch cut short there is read again after a restart; it must not fail).
        atexit.register(self._remove)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Set ``key`` in ``partition``: what the agents' writes do (``stream.runtime.faust_output._write``)."""
        self.data[key] = value
        self.key_partitions[key] = partition

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; whether it was there."""
        self.key_partitions.pop(key, None)
        return self.data.pop(key, None) is not None

    def partition_of(self, key: bytes) -> int | None:
        return self.key_partitions.get(key)

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        """Apply changelog records in order: a value sets its key, a tombstone deletes it."""
        for event in batch:
            key = to_key(event.key)
            if event.message.value is None:
                self.data.pop(key, None)
                self.key_partitions.pop(key, None)
            else:
                self.data[key] = to_value(event.value)
                self.key_partitions[key] = event.message.partition

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop the keys of the partitions no longer owned."""
        owned = {partition for _, partition in active_tps}
        for key in [key for key, partition in self.key_partitions.items() if partition not in owned]:
            self.data.pop(key, None)
            self.key_partitions.pop(key, None)

    def _remove(self) -> None:
        """Close and delete the files: the changelog holds the state."""
        for mapping in (self._values, self._partitions):
            with contextlib.suppress(Exception):
                mapping.close()
        shutil.rmtree(self.directory, ignore_errors=True)


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
    """Faust's in-memory table store, its data kept in one dict per partition (``PartitionedData``)."""

    def __post_init__(self) -> None:
        self.data: PartitionedData = PartitionedData()

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
        for event in batch:
            key = to_key(event.key)
            if event.message.value is None:
                data.pop(key, None)
            else:
                data.put(key, to_value(event.value), event.message.partition)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop the keys of the partitions no longer owned."""
        self.data.keep_only({partition for _, partition in active_tps})


STORES.aliases["disk"] = "stream.store:DiskStore"
STORES.aliases["partitioned"] = "stream.store:MemoryStore"
