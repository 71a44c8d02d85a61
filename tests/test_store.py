"""The disk store's mapping behaves as a dict of bytes, a killed worker's files are cleaned up, the memory store
keeps each partition's keys apart, and a store drops the keys the agents wrote once their partition is no longer
owned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from stream.app import build_app
from stream.runtime.faust_output import _write
from stream.settings import Settings
from stream.store import PREFIX, DiskMapping, DiskStore, MemoryStore, PartitionedData, _PartitionMapping, remove_orphans


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
    store.data, store.key_partitions = store._values, _PartitionMapping(store._partitions)
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
    assert [store.partition_of(key) for key in (b"kept", b"lead", b"visitor")] == [0, None, None]
    assert producer.sent == [("t-changelog", b"lead", b"1", 2), ("t-changelog", b"visitor", b"2", 2),
                             ("t-changelog", b"kept", b"3", 0), ("t-changelog", b"visitor", None, 2)]


def test_partitioned_data_reads_every_partition_s_keys_as_one_mapping() -> None:
    data = PartitionedData()
    data.put(b"a", b"1", 0)
    data.put(b"b", b"2", 3)
    data.put(b"a", b"one", 0)
    assert data[b"a"] == b"one" and data.get(b"b") == b"2" and data.get(b"c", b"-") == b"-"
    assert b"b" in data and b"c" not in data and len(data) == 2
    assert dict(data.items()) == {b"a": b"one", b"b": b"2"} and sorted(data) == [b"a", b"b"]
    assert [data.partition_of(key) for key in (b"a", b"b", b"c")] == [0, 3, None]
    data[b"b"] = b"two"  # an existing key is set where it is
    assert data.parts == {0: {b"a": b"one"}, 3: {b"b": b"two"}}
    assert data.pop(b"a") == b"one" and data.pop(b"a", None) is None
    with pytest.raises(KeyError):
        data[b"a"]
    with pytest.raises(KeyError):
        del data[b"a"]


def test_partitioned_data_refuses_a_new_key_without_its_partition() -> None:
    data = PartitionedData()
    with pytest.raises(KeyError, match="with its partition"):
        data[b"new"] = b"1"
    assert not data


def test_a_key_put_in_another_partition_leaves_the_first() -> None:
    data = PartitionedData()
    data.put(b"k", b"1", 1)
    data.put(b"k", b"2", 2)
    assert data.parts == {1: {}, 2: {b"k": b"2"}} and data[b"k"] == b"2" and len(data) == 1


def _changelog(partition: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(partition=partition, value=value))


def test_the_memory_store_restores_each_record_into_its_partition_and_drops_the_partitions_given_up() -> None:
    store = _memory_store(Path())
    records = [_changelog(0, b"a", b"1"), _changelog(1, b"b", b"2"), _changelog(1, b"c", b"3"),
               _changelog(0, b"a", b"4"), _changelog(1, b"c", None), _changelog(2, b"gone", None)]
    store.apply_changelog_batch(records, lambda key: key, lambda value: value)
    assert store.data.parts == {0: {b"a": b"4"}, 1: {b"b": b"2"}}
    asyncio.run(store.on_recovery_completed({TP("t-changelog", 1)}, set()))
    assert dict(store.data.items()) == {b"b": b"2"} and store.partition_of(b"b") == 1


def test_the_app_keeps_its_tables_in_the_partitioned_memory_store() -> None:
    settings = Settings.from_env({})
    app = build_app(settings, dict.fromkeys(settings.input_topics.values(), 1))
    assert [type(table.data) for table in app.tables.values()] == [MemoryStore, MemoryStore]
