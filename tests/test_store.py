"""The disk store's mapping behaves as a dict of bytes, a killed worker's files are cleaned up, and a store drops
the keys the agents wrote once their partition is no longer owned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.stores.memory import Store as MemoryStore
from faust.types import TP

from stream.app import _write
from stream.store import PREFIX, DiskMapping, DiskStore, _PartitionMapping, remove_orphans


def test_disk_mapping_reads_back_what_was_written_and_deleted(tmp_path: Path) -> None:
    mapping = DiskMapping(tmp_path / "db")
    reference: dict[bytes, bytes] = {}
    for i in range(200):
        key, value = b"k%03d" % i, bytes([i % 256]) * (i * 37 % 5000)
        mapping[key] = value
        reference[key] = value
    for i in range(0, 200, 3):
        del mapping[b"k%03d" % i]
        del reference[b"k%03d" % i]
    mapping[b"k001"] = b"again"
    reference[b"k001"] = b"again"
    assert dict(mapping.items()) == reference
    assert len(mapping) == len(reference) and sorted(mapping) == sorted(reference)
    assert mapping.get(b"k000") is None and mapping.get(b"k000", b"x") == b"x"
    assert b"k001" in mapping and b"k000" not in mapping and "k001" not in mapping
    with pytest.raises(KeyError):
        mapping[b"k000"]
    with pytest.raises(KeyError):
        del mapping[b"k000"]
    assert mapping.pop(b"k001") == b"again" and mapping.pop(b"k001", None) is None
    assert mapping.pop(b"k001", b"d") == b"d" and b"k001" not in mapping
    with pytest.raises(KeyError):
        mapping.pop(b"k001")
    mapping.clear()
    assert list(mapping.items()) == []
    mapping.close()


def test_only_the_files_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = tmp_path / f"{PREFIX}{gone.stdout.strip()}-cells"
    alive = tmp_path / f"{PREFIX}{os.getppid()}-cells"
    own = tmp_path / f"{PREFIX}{os.getpid()}-entity-state"  # another table of this very process
    other = tmp_path / "not-a-store"
    for directory in (dead, alive, own, other):
        directory.mkdir()
    assert remove_orphans(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and own.exists() and other.exists()


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None, *_: Any
                   ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _memory_store(tmp_path: Path) -> Any:
    store = object.__new__(MemoryStore)
    store.__post_init__()
    return store


def _disk_store(tmp_path: Path) -> Any:
    # The disk store's two mappings, without the app that names its directory.
    store = object.__new__(DiskStore)
    store._values, store._partitions = DiskMapping(tmp_path / "data"), DiskMapping(tmp_path / "partitions")
    store.data, store._key_partition = store._values, _PartitionMapping(store._partitions)
    return store


@pytest.mark.parametrize("make_store", [_memory_store, _disk_store], ids=["memory", "disk"])
def test_keys_written_by_the_agents_are_dropped_with_their_partition(make_store: Any, tmp_path: Path) -> None:
    # Faust drops the keys of partitions no longer owned when a recovery completes, but knows the partition only
    # of the keys it restored itself.
    store, producer = make_store(tmp_path), _Producer()
    table = SimpleNamespace(data=store, changelog_topic=SimpleNamespace(get_topic_name=lambda: "t-changelog"))

    async def scenario() -> None:
        await _write(table, 2, {b"lead": b"1", b"visitor": b"2"}, producer.send)  # type: ignore[arg-type]
        await _write(table, 0, {b"kept": b"3"}, producer.send)  # type: ignore[arg-type]
        await _write(table, 2, {b"visitor": None, b"never-there": None}, producer.send)  # type: ignore[arg-type]
        await store.on_recovery_completed({TP("t-changelog", 0)}, set())

    asyncio.run(scenario())
    assert dict(store.data.items()) == {b"kept": b"3"}
    assert dict(store._key_partition.items()) == {b"kept": 0}
    assert producer.sent == [("t-changelog", b"lead", b"1", 2), ("t-changelog", b"visitor", b"2", 2),
                             ("t-changelog", b"kept", b"3", 0), ("t-changelog", b"visitor", None, 2)]
