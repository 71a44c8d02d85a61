"""The table stores: the memory store keeps each partition's keys apart; the disk store keeps data and changelog
offsets together in files a restarted worker reuses, and rebuilds files it cannot trust; both drop the keys of
partitions given up and keep standby ones, and both learn the offsets of the agents' writes once delivered."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from stream.app import build_app
from stream.runtime.faust_output import FaustOutput, Routes
from stream.settings import Settings
from stream.state.base import TableStore
from stream.state.directories import PRIVATE_PREFIX, remove_orphans
from stream.state.disk import DiskStore
from stream.state.memory import MemoryStore


def _app(data_dir: Path, **env: str) -> Any:
    settings = Settings.from_env({"KPI_DATA_DIR": str(data_dir), **env})
    app = build_app(settings, dict.fromkeys(settings.input_topics.values(), 1))
    _stores(app)  # Faust makes a table's store when it is first used; a worker's start uses them all
    return app


def _stores(app: Any) -> list[Any]:
    return [table.data for table in app.tables.values()]


def _close(app: Any) -> None:
    for store in _stores(app):
        store.close()


class _Producer:
    """Sends recorded in order; each send's future answers with the record's offset in its partition."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.ends: dict[tuple[str, int | None], int] = {}

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None, *_: Any
                   ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        offset = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = offset + 1
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(offset=offset))
        return done


def _output(table: Any, producer: _Producer) -> FaustOutput:
    async def started() -> _Producer:
        return producer

    return FaustOutput(Routes(topics={}, raw_topics={}, tables={"t": table}, producer=started))


async def _write(table: Any, producer: _Producer, partition: int, writes: dict[bytes, bytes | None]) -> None:
    out = _output(table, producer)
    await out.write("t", partition, writes)
    await out.delivered()


def _memory_table(tmp_path: Path) -> Any:
    return _app(tmp_path, KPI_STORE="memory://").tables["cells"]


def _disk_table(tmp_path: Path) -> Any:
    return _app(tmp_path).tables["cells"]


@pytest.mark.parametrize("make_table", [_memory_table, _disk_table], ids=["memory", "disk"])
def test_delivered_writes_carry_their_offsets_and_partitions_given_up_are_dropped(make_table: Any,
                                                                                  tmp_path: Path) -> None:
    table, producer = make_table(tmp_path), _Producer()
    store, changelog = table.data, table.changelog_topic.get_topic_name()

    async def scenario() -> None:
        await _write(table, producer, 2, {b"lead": b"1", b"visitor": b"2"})
        await _write(table, producer, 0, {b"kept": b"3"})
        await _write(table, producer, 2, {b"visitor": None, b"never-there": None})
        await _write(table, producer, 1, {b"standby": b"4"})
        assert [store.persisted_offset(TP(changelog, p)) for p in range(4)] == [0, 0, 2, None]
        assert store.persisted_offset(TP("another-topic", 2)) is None
        await store.on_recovery_completed({TP(changelog, 0)}, {TP(changelog, 1)})

    asyncio.run(scenario())
    assert dict(store.data.items()) == {b"kept": b"3", b"standby": b"4"}
    assert [store.partition_of(key) for key in (b"kept", b"standby", b"lead", b"visitor")] == [0, 1, None, None]
    assert [store.persisted_offset(TP(changelog, p)) for p in range(4)] == [0, 0, None, None]
    assert producer.sent == [(changelog, b"lead", b"1", 2), (changelog, b"visitor", b"2", 2),
                             (changelog, b"kept", b"3", 0), (changelog, b"visitor", None, 2),
                             (changelog, b"standby", b"4", 1)]


def test_a_disk_write_is_read_back_at_once_but_reaches_the_files_only_once_delivered(tmp_path: Path) -> None:
    table, producer = _disk_table(tmp_path), _Producer()
    store = table.data

    async def scenario() -> None:
        out = _output(table, producer)
        await out.write("t", 3, {b"a": b"1", b"b": b"2"})
        # Read back by the batch that wrote it (and the next), but not in the files, nor its offset.
        assert store.data.get(b"a") == b"1" and dict(store.data.items()) == {b"a": b"1", b"b": b"2"}
        assert store.files.db.get(b"a") is None and store.persisted_offset(TP("x", 3)) is None
        await out.delivered()

    asyncio.run(scenario())
    assert store.files.db.get(b"a") == b"1" and not store.data.pending
    assert store.files.checkpoints()[3].offset == 1


def test_standby_records_restored_while_a_batch_waits_for_its_sends_leave_its_writes_alone(tmp_path: Path) -> None:
    table, producer = _disk_table(tmp_path), _Producer()
    store = table.data

    async def scenario() -> None:
        out = _output(table, producer)
        await out.write("t", 0, {b"active": b"1"})
        # Faust's recovery keeps reading standby partitions while the agents run.
        store.apply_changelog_batch([_changelog(1, 7, b"standby", b"2")], lambda key: key, lambda value: value)
        await out.delivered()

    asyncio.run(scenario())
    assert {key: store.files.db.get(key) for key in (b"active", b"standby")} == {b"active": b"1", b"standby": b"2"}
    assert {p: c.offset for p, c in store.files.checkpoints().items()} == {0: 0, 1: 7}


def test_a_worker_started_on_the_same_data_dir_reuses_the_data_and_offsets(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    first, producer = _app(tmp_path), _Producer()
    table = first.tables["entity-state"]
    changelog = table.changelog_topic.get_topic_name()
    asyncio.run(_write(table, producer, 1, {b"lead:1": b"x", b"lead:2": b"y"}))
    _close(first)
    with caplog.at_level(logging.INFO, logger="stream.state.disk"):
        second = _app(tmp_path)
        store = second.tables["entity-state"].data
        assert dict(store.data.items()) == {b"lead:1": b"x", b"lead:2": b"y"}
    assert store.persisted_offset(TP(changelog, 1)) == 1 and store.persisted_offset(TP(changelog, 0)) is None
    assert "reusing local state" in caplog.text and "p1@1" in caplog.text
    _close(second)


def test_restored_records_are_written_with_the_offset_of_the_last_one_per_partition(tmp_path: Path) -> None:
    app = _app(tmp_path)
    store = app.tables["cells"].data
    records = [_changelog(0, 10, b"a", b"1"), _changelog(1, 4, b"b", b"2"), _changelog(0, 11, b"a", None),
               _changelog(1, 5, b"c", b"3")]
    store.apply_changelog_batch(records, lambda key: key, lambda value: value)
    assert dict(store.data.items()) == {b"b": b"2", b"c": b"3"}
    assert {p: c.offset for p, c in store.files.checkpoints().items()} == {0: 11, 1: 5}
    _close(app)


@pytest.mark.parametrize(("env", "why"), [
    ({"KPI_PARTITIONS": "8"}, "'partitions': 8"),
    ({"KPI_APP_ID": "another-app"}, None),  # another app's files are in a directory of their own
])
def test_files_of_another_identity_are_not_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  env: dict[str, str], why: str | None) -> None:
    first = _app(tmp_path)
    asyncio.run(_write(first.tables["cells"], _Producer(), 0, {b"k": b"v"}))
    _close(first)
    with caplog.at_level(logging.INFO, logger="stream.state.disk"):
        second = _app(tmp_path, **env)
    store = second.tables["cells"].data
    assert dict(store.data.items()) == {} and store.files.checkpoints() == {}
    if why is not None:
        assert "cannot be trusted" in caplog.text and why in caplog.text
    else:
        assert "no local state" in caplog.text
    _close(second)


def test_corrupted_files_are_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _app(tmp_path)
    store = first.tables["cells"].data
    asyncio.run(_write(first.tables["cells"], _Producer(), 0, {b"k%05d" % i: b"v" * 200 for i in range(2000)}))
    store.files.db.flush()  # into a table file, which the reopening worker reads back block by block
    db_dir = store.files.path
    _close(first)
    for table_file in db_dir.glob("*.sst"):
        raw = bytearray(table_file.read_bytes())
        raw[len(raw) // 3: len(raw) // 3 + 64] = b"\xff" * 64
        table_file.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="stream.state.disk"):
        second = _app(tmp_path)
    assert "cannot be trusted" in caplog.text
    store = second.tables["cells"].data
    assert dict(store.data.items()) == {} and store.files.checkpoints() == {}
    _close(second)


def test_workers_sharing_a_data_dir_each_take_a_directory_of_their_own_and_keep_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _app(tmp_path)
    with caplog.at_level(logging.INFO, logger="stream.state.disk"):
        second = _app(tmp_path)
    shared = first.tables["cells"].data.directory
    assert second.tables["cells"].data.directory == shared.with_name(shared.name + ".2")
    assert "in use by other workers" in caplog.text
    assert (shared / "lock").read_text() == f"worker pid {os.getpid()}\n"
    asyncio.run(_write(second.tables["cells"], _Producer(), 0, {b"k": b"v"}))
    assert dict(first.tables["cells"].data.data.items()) == {}
    _close(second)
    third = _app(tmp_path)  # the second's directory is free again, with its files
    assert third.tables["cells"].data.directory == shared.with_name(shared.name + ".2")
    assert dict(third.tables["cells"].data.data.items()) == {b"k": b"v"}
    _close(first)
    _close(third)


def _changelog(partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(partition=partition, offset=offset,
                                                                         value=value))


class _Consumer:
    def __init__(self, earliest: dict[TP, int], ends: dict[TP, int]) -> None:
        self.earliest, self.ends = earliest, ends

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}


def test_partitions_the_changelog_no_longer_covers_are_rebuilt_before_recovery(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _app(tmp_path)
    table = first.tables["cells"]
    changelog = table.changelog_topic.get_topic_name()
    records = [_changelog(p, 40, b"key-%d" % p, b"v") for p in range(4)]
    table.data.apply_changelog_batch(records, lambda key: key, lambda value: value)
    _close(first)
    second = _app(tmp_path)
    store = second.tables["cells"].data
    tps = [TP(changelog, p) for p in range(4)]
    # p0: 10 records to read; p1: the topic was made again; p2: records deleted past the offset; p3: up to date.
    second._consumer = _Consumer(dict(zip(tps, [0, 0, 60, 0], strict=True)),
                                 dict(zip(tps, [51, 12, 70, 41], strict=True)))
    with caplog.at_level(logging.INFO, logger="stream.state.disk"):
        asyncio.run(store.on_rebalance(set(tps), set(), set(tps)))
    assert [store.persisted_offset(tp) for tp in tps] == [40, None, None, 40]
    assert dict(store.data.items()) == {b"key-0": b"v", b"key-3": b"v"}
    assert "10 records past it to read" in caplog.text and "0 records past it to read" in caplog.text
    assert "ends at offset 12" in caplog.text and "before offset 60 were deleted" in caplog.text
    _close(second)


def test_only_the_earlier_version_s_files_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = tmp_path / f"{PRIVATE_PREFIX}{gone.stdout.strip()}-cells"
    alive = tmp_path / f"{PRIVATE_PREFIX}{os.getppid()}-cells"
    own = tmp_path / f"{PRIVATE_PREFIX}{os.getpid()}-entity-state"  # another table of this very process
    shared = tmp_path / "app-cells"  # a worker's files kept for the next one
    for directory in (dead, alive, own, shared):
        directory.mkdir()
    assert remove_orphans(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and own.exists() and shared.exists()


def test_the_memory_store_restores_each_record_into_its_partition_with_its_offset(tmp_path: Path) -> None:
    table = _memory_table(tmp_path)
    store, changelog = table.data, table.changelog_topic.get_topic_name()
    records = [_changelog(0, 3, b"a", b"1"), _changelog(1, 7, b"b", b"2"), _changelog(1, 8, b"c", b"3"),
               _changelog(0, 4, b"a", b"4"), _changelog(1, 9, b"c", None), _changelog(2, 0, b"gone", None)]
    store.apply_changelog_batch(records, lambda key: key, lambda value: value)
    assert store.data.parts == {0: {b"a": b"4"}, 1: {b"b": b"2"}}
    assert store.offsets == {0: 4, 1: 9, 2: 0}
    asyncio.run(store.on_recovery_completed({TP(changelog, 1)}, set()))
    assert dict(store.data.items()) == {b"b": b"2"} and store.partition_of(b"b") == 1
    assert store.offsets == {1: 9}


def test_the_stores_the_settings_choose(tmp_path: Path) -> None:
    for store, kind in (("memory://", MemoryStore), ("disk://", DiskStore)):
        app = _app(tmp_path / store.removesuffix("://"), KPI_STORE=store)
        assert [type(s) for s in _stores(app)] == [kind, kind]
        if kind is DiskStore:
            _close(app)


# The contract every store keeps, one step after another: what the step returns, then the store's keys
# (key -> (value, partition)) and changelog offsets (partition -> offset).
_CONTRACT: list[tuple[str, Any, Any, dict[bytes, tuple[bytes, int]], dict[int, int]]] = [
    ("put", (b"a", b"1", 0), None, {b"a": (b"1", 0)}, {}),
    ("put", (b"b", b"2", 1), None, {b"a": (b"1", 0), b"b": (b"2", 1)}, {}),
    ("commit", {0: 5, 1: 2}, None, {b"a": (b"1", 0), b"b": (b"2", 1)}, {0: 5, 1: 2}),
    ("put", (b"a", b"one", 0), None, {b"a": (b"one", 0), b"b": (b"2", 1)}, {0: 5, 1: 2}),
    ("delete", b"b", True, {b"a": (b"one", 0)}, {0: 5, 1: 2}),
    ("delete", b"never-there", False, {b"a": (b"one", 0)}, {0: 5, 1: 2}),
    ("commit", {1: 3}, None, {b"a": (b"one", 0)}, {0: 5, 1: 3}),
    ("restore", [(2, 10, b"c", b"3"), (1, 4, b"b", b"4"), (2, 11, b"c", None), (2, 12, b"d", b"5")], None,
     {b"a": (b"one", 0), b"b": (b"4", 1), b"d": (b"5", 2)}, {0: 5, 1: 4, 2: 12}),
    ("restore", [], None, {b"a": (b"one", 0), b"b": (b"4", 1), b"d": (b"5", 2)}, {0: 5, 1: 4, 2: 12}),
    ("recovered", ({0}, {2}), None, {b"a": (b"one", 0), b"d": (b"5", 2)}, {0: 5, 2: 12}),
    ("recovered", ({0, 1, 2}, set()), None, {b"a": (b"one", 0), b"d": (b"5", 2)}, {0: 5, 2: 12}),
    ("recovered", (set(), set()), None, {}, {}),
]


@pytest.mark.parametrize("make_table", [_memory_table, _disk_table], ids=["memory", "disk"])
def test_every_store_keeps_the_one_contract(make_table: Any, tmp_path: Path) -> None:
    table = make_table(tmp_path)
    store, changelog = table.data, table.changelog_topic.get_topic_name()
    assert isinstance(store, TableStore)
    steps: dict[str, Any] = {
        "put": lambda args: store.put(*args),
        "delete": store.delete,
        "commit": store.commit,
        "restore": lambda records: store.apply_changelog_batch(
            [_changelog(*record) for record in records], lambda key: key, lambda value: value),
        "recovered": lambda tps: asyncio.run(store.on_recovery_completed(
            {TP(changelog, p) for p in tps[0]}, {TP(changelog, p) for p in tps[1]})),
    }
    for number, (step, argument, returned, keys, offsets) in enumerate(_CONTRACT):
        assert steps[step](argument) == returned, number
        assert dict(store.data.items()) == {key: value for key, (value, _) in keys.items()}, number
        assert {key: store.partition_of(key) for key in keys} == {key: p for key, (_, p) in keys.items()}, number
        assert {p: store.persisted_offset(TP(changelog, p)) for p in range(4)} == {
            p: offsets.get(p) for p in range(4)}, number
        assert store.persisted_offset(TP("another-topic", 0)) is None
    if isinstance(store, DiskStore):
        store.close()


class _CountedScans:
    """A column family whose full scans are counted."""

    def __init__(self, column_family: Any) -> None:
        self.column_family, self.scans = column_family, 0

    def iter(self, *args: Any) -> Any:
        self.scans += 1
        return self.column_family.iter(*args)

    def items(self, *args: Any, **kwargs: Any) -> Any:
        self.scans += 1
        return self.column_family.items(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.column_family, name)


def _recovered(store: Any, changelog: str, active: set[int]) -> int:
    """Complete a recovery keeping the ``active`` partitions; the scans of the key partitions it made."""
    counted = store.files.partitions = _CountedScans(store.files.partitions)
    asyncio.run(store.on_recovery_completed({TP(changelog, p) for p in active}, set()))
    store.files.partitions = counted.column_family
    return counted.scans


def test_a_rebalance_scans_the_disk_keys_only_when_it_gives_up_a_partition_they_hold(tmp_path: Path) -> None:
    first = _app(tmp_path)
    table = first.tables["cells"]
    store, changelog = table.data, table.changelog_topic.get_topic_name()
    store.apply_changelog_batch([_changelog(p, 3, b"key-%d" % p, b"v") for p in (0, 1)], lambda key: key,
                                lambda value: value)
    assert _recovered(store, changelog, {0, 1, 2}) == 0  # nothing to drop
    assert _recovered(store, changelog, {0}) == 1 and dict(store.data.items()) == {b"key-0": b"v"}
    assert _recovered(store, changelog, {0}) == 0  # dropped already
    _close(first)
    second = _app(tmp_path)  # the partitions the files hold keys of are learned when they are read back
    store = second.tables["cells"].data
    assert _recovered(store, changelog, {0, 3}) == 0
    assert _recovered(store, changelog, {3}) == 1 and dict(store.data.items()) == {}
    _close(second)
