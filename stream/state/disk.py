"""``KPI_STORE=disk://``: a table's keys and values in local RocksDB files that outlive the worker.

Each table of an app keeps one RocksDB directory under ``KPI_DATA_DIR`` (``<tables>/<app id>-<table>/``) with
three column families: the data, each key's changelog partition, and per partition the changelog offset the data
reflects (``stream.state.checkpoints``). The agents' writes of a batch are held in memory until their changelog sends
are delivered (``stream.runtime.faust_output``), then written with the new offsets in one atomic RocksDB write;
records restored from the changelog are written the same way, with the offset of the last one. So the files
always hold, per partition, the changelog's state at the offset they name, whatever stopped the worker, and a
worker started on them reads only the changelog past that offset.

Files that cannot be trusted are emptied, and the table restored from the changelog, with a log line saying why:

- at open: files RocksDB cannot open or read (deleted in part, corrupted: every block is read back once, its
  checksum checked), files of another app id, table, partition count or format version;
- when partitions are assigned: a changelog that lost records past the files' offset (``checkpoints.untrusted``).

A full scan while the worker runs (``LocalTable.items``, a partition's keys dropped) that meets a damaged block
raises ``DamagedFiles`` rather than end early without the keys past it; the worker stops, and restarted, rebuilds.

One worker process uses a table directory at a time (a lock file beside the files). Workers sharing one
``KPI_DATA_DIR`` (replicas on one volume, two workers on a laptop) each take the first directory of the table
no other holds: ``<app id>-<table>``, then ``<app id>-<table>.2``, and so on. A worker restarted there reuses
whichever it takes; the offsets make any of them sound, and the one it had before saves the most reading
(``stream.state.directories``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from faust.types import TP
from rocksdict import Options, Rdict, RdictIter, ReadOptions, WriteBatch

from stream.state.base import TableData, TableStore, Write
from stream.state.checkpoints import Checkpoint, describe, untrusted
from stream.state.directories import remove_orphans, safe_name, take_slot

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the files' layout and of the table values they hold; files of another are rebuilt
_PARTITIONS_CF, _OFFSETS_CF, _META_CF = "partitions", "offsets", "meta"
_IDENTITY, _OPEN = b"identity", b"open"
_PARTITION = struct.Struct(">I")
_CHECKPOINT = struct.Struct(">qq")  # offset, wall-clock ms of the write


def _options() -> Any:
    """Raw bytes in and out (no pickling); write buffers bounded, so memory stays small whatever the data."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_write_buffer_size(8 * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    return options


def _column_families() -> dict[str, Any]:
    return {name: Options(raw_mode=True) for name in (_PARTITIONS_CF, _OFFSETS_CF, _META_CF)}


class DamagedFiles(RuntimeError):
    """A table's local files could not be read: a block failed its checksum, or a file is gone."""


class LocalFiles:
    """One table's RocksDB: data, key partitions and checkpoints, written together in atomic batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Rdict(str(path), _options(), column_families=_column_families())
        self._partitions_cf = self.db.get_column_family_handle(_PARTITIONS_CF)
        self._offsets_cf = self.db.get_column_family_handle(_OFFSETS_CF)
        self._meta_cf = self.db.get_column_family_handle(_META_CF)
        self.partitions = self.db.get_column_family(_PARTITIONS_CF)
        self.offsets = self.db.get_column_family(_OFFSETS_CF)
        self.meta = self.db.get_column_family(_META_CF)
        # The partitions the files may hold keys of: learned by ``verify``, which reads every key back when
        # files are reused (new files hold none), and kept by ``put``; so that a rebalance scans the keys only
        # when it gives up a partition they hold keys of (1.5 M keys on the lead-heavy million).
        self.key_partitions: set[int] = set()

    def scan(self, mapping: Rdict, options: ReadOptions | None = None) -> Iterator[RdictIter]:
        """Every entry of ``mapping`` (the data or a column family), in key order, as an iterator at it.

        Raises:
            DamagedFiles: when a block could not be read (after the entries before it).
        """
        # An iterator, not ``items()``: rocksdict's ``items()`` ends quietly at a block that fails its checksum,
        # as if the keys ended there; only the iterator's ``status()`` raises the error.
        iterator = mapping.iter(options or ReadOptions())
        iterator.seek_to_first()
        while iterator.valid():
            yield iterator
            iterator.next()
        try:
            iterator.status()
        except Exception as exc:  # rocksdict raises plain Exceptions (Corruption, IO error, ...)
            raise DamagedFiles(f"the local files in {self.path} could not be read to the end ({exc}); a worker "
                               "reads its files back when it starts and rebuilds damaged ones from the "
                               "changelog") from exc

    def verify(self) -> int:
        """Read every block back (RocksDB checks each checksum) and learn the partitions of the keys; the number
        of keys.

        Raises:
            DamagedFiles: when a block is corrupted.
            Exception: rocksdict's, when a file is missing.
        """
        options = ReadOptions()
        options.set_verify_checksums(True)
        count = 0
        for mapping in (self.db, self.offsets, self.meta):
            count += sum(1 for _ in self.scan(mapping, options))
        partitions = set()
        for entry in self.scan(self.partitions, options):
            partitions.add(entry.value())
            count += 1
        self.key_partitions = {_PARTITION.unpack(partition)[0] for partition in partitions}
        return count

    def keys_of(self, partitions: set[int]) -> Iterator[tuple[bytes, int]]:
        """The keys of ``partitions`` with their partition, from a scan of every key's partition."""
        wanted = {_PARTITION.pack(partition): partition for partition in partitions}  # compared packed: no unpack
        for entry in self.scan(self.partitions):
            partition = wanted.get(entry.value())
            if partition is not None:
                yield entry.key(), partition

    def checkpoints(self) -> dict[int, Checkpoint]:
        return {_PARTITION.unpack(key)[0]: Checkpoint(*_CHECKPOINT.unpack(value))
                for key, value in cast(Iterator[tuple[bytes, bytes]], self.offsets.items())}

    def batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def put(self, batch: WriteBatch, key: bytes, value: bytes | None, partition: int) -> None:
        """Add a key's value (None: its deletion) to ``batch``."""
        if value is None:
            batch.delete(key)
            batch.delete(key, self._partitions_cf)
        else:
            batch.put(key, value)
            batch.put(key, _PARTITION.pack(partition), self._partitions_cf)
            self.key_partitions.add(partition)

    def put_offsets(self, batch: WriteBatch, offsets: Mapping[int, int], now_ms: int) -> None:
        for partition, offset in offsets.items():
            batch.put(_PARTITION.pack(partition), _CHECKPOINT.pack(offset, now_ms), self._offsets_cf)

    def drop_offset(self, batch: WriteBatch, partition: int) -> None:
        batch.delete(_PARTITION.pack(partition), self._offsets_cf)

    def put_meta(self, key: bytes, value: bytes | None) -> None:
        batch = self.batch()
        if value is None:
            batch.delete(key, self._meta_cf)
        else:
            batch.put(key, value, self._meta_cf)
        self.db.write(batch)

    def close(self) -> None:
        """Close the files; the object cannot be used after."""
        del self._partitions_cf, self._offsets_cf, self._meta_cf, self.partitions, self.offsets, self.meta
        self.db.close()


class LocalTable(TableData):
    """The table's data as Faust and the stages read it: the files, under the writes of the running batch.

    ``put`` and ``delete`` collect the agents' writes; ``commit`` writes them with their changelog offsets once
    their sends are delivered. Until then they are read from memory.
    """

    def __init__(self, files: LocalFiles) -> None:
        self.files = files
        self.pending: dict[bytes, tuple[bytes | None, int]] = {}

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return cast(bytes, value)

    def get(self, key: bytes, default: Any = None) -> Any:
        """The value, or ``default``: one read."""
        if self.pending:
            entry = self.pending.get(key)
            if entry is not None:
                return default if entry[0] is None else entry[0]
        value = self.files.db.get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        raise TypeError("the disk store is written with put(key, value, partition) and commit(offsets)")

    def __delitem__(self, key: bytes) -> None:
        raise TypeError("the disk store is written with put(key, None, partition) and commit(offsets)")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        return (key for key, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def items(self) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[override]
        """Every (key, value), in key order from the files, then the running batch's new keys."""
        pending = dict(self.pending)
        for stored in self.files.scan(self.files.db):
            key, value = stored.key(), stored.value()
            entry = pending.pop(key, None)
            if entry is None:
                yield key, value
            elif entry[0] is not None:
                yield key, entry[0]
        for key, (new, _) in pending.items():
            if new is not None:
                yield key, new

    def partition_of(self, key: bytes) -> int | None:
        entry = self.pending.get(key)
        if entry is not None:
            return None if entry[0] is None else entry[1]
        stored = self.files.partitions.get(key)
        return None if stored is None else int(_PARTITION.unpack(stored)[0])


class _LocalStateApp(Protocol):
    """What the disk store needs of its app besides Faust's: ``KPI_LOCAL_STATE_MAX_AGE`` (``KpiApp``)."""

    local_state_max_age_ms: int


class DiskStore(TableStore):
    """``KPI_STORE=disk://``: the table store on ``LocalFiles``, which a restarted worker reuses."""

    clock: Callable[[], float] = time.time

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the in-memory store's dicts, replaced below once app and name are set
        tables_dir = Path(self.app.conf.tabledir)
        tables_dir.mkdir(parents=True, exist_ok=True)
        remove_orphans(tables_dir)
        self.max_age_ms = cast(_LocalStateApp, self.app).local_state_max_age_ms
        self.identity = {"format": FORMAT_VERSION, "app_id": self.app.conf.id, "table": self.table_name,
                         "partitions": self.table.partitions or self.app.conf.topic_partitions}
        first = f"{safe_name(self.app.conf.id)}-{safe_name(self.table_name)}"
        self.directory, self._lock = take_slot(tables_dir, first)
        if self.directory.name != first:
            log.info("table %s: the first local state directories of this table are in use by other workers on "
                     "this data dir; this worker takes %s", self.table_name, self.directory)
        self.files = self._open(self.directory / "db")
        self.data: LocalTable = LocalTable(self.files)
        self._checkpoints = self.files.checkpoints()
        self._unchecked = set(self._checkpoints)  # loaded from the files: checked against the changelog once
        self.files.put_meta(_OPEN, str(os.getpid()).encode())
        # At exit, not when Faust stops the table: it stops tables before the agents, whose last batches still
        # write to them (a batch cut short there is read again after a restart; it must not fail).
        atexit.register(self.close)

    # -- opening -------------------------------------------------------------------------------------------------

    def _open(self, path: Path) -> LocalFiles:
        """The files at ``path``, or new ones when those cannot be trusted (logged with why)."""
        existed = path.exists()
        try:
            files = LocalFiles(path)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exceptions (IO error, Corruption, ...)
            return self._rebuild(path, None, f"its files cannot be opened ({exc})")
        if not existed:
            log.info("table %s: no local state in %s; restoring it from the changelog", self.table_name, path)
            files.put_meta(_IDENTITY, orjson.dumps(self.identity))
            return files
        stored = files.meta.get(_IDENTITY)
        why = None
        try:
            if stored is None:
                raise ValueError("it has no identity record")
            found = orjson.loads(stored)
            if found != self.identity:
                raise ValueError(f"it belongs to {found}, not {self.identity}")
            started = time.monotonic()
            keys = files.verify()
        except Exception as exc:  # noqa: BLE001 - rocksdict's are plain Exceptions; ours ValueErrors
            why = str(exc)
        if why is not None:
            # Rebuilt out of the except block: the error's traceback holds the read-back's frame, whose iterator
            # keeps the files open (and their RocksDB lock held) after ``close``, and the new files would fail.
            return self._rebuild(path, files, why)
        previous = files.meta.get(_OPEN)
        log.info("table %s: reusing local state in %s (%d keys read back in %.2f s; offsets %s)%s", self.table_name,
                 path, keys, time.monotonic() - started,
                 describe({p: c.offset for p, c in files.checkpoints().items()}),
                 "" if previous is None else f"; the worker that wrote it (pid {previous.decode()}) did not stop "
                 "cleanly, and each of its batches was one atomic write with its changelog offsets")
        return files

    def _rebuild(self, path: Path, files: LocalFiles | None, why: str) -> LocalFiles:
        log.warning("table %s: local state in %s cannot be trusted: %s; rebuilding it from the changelog",
                    self.table_name, path, why)
        if files is not None:
            with contextlib.suppress(Exception):
                files.close()
        shutil.rmtree(path, ignore_errors=True)
        files = LocalFiles(path)
        files.put_meta(_IDENTITY, orjson.dumps(self.identity))
        return files

    # -- the backend of the store's contract (stream.state.base) ------------------------------------------------

    def _offset(self, partition: int) -> int | None:
        checkpoint = self._checkpoints.get(partition)
        return None if checkpoint is None else checkpoint.offset

    def _stage(self, key: bytes, value: bytes | None, partition: int) -> None:
        self.data.pending[key] = (value, partition)

    def _commit(self, offsets: Mapping[int, int]) -> None:
        pending = self.data.pending
        self._write(((key, value, partition) for key, (value, partition) in pending.items()), offsets)
        pending.clear()

    def _restore(self, writes: Iterable[Write], offsets: Mapping[int, int]) -> None:
        # The running batch's writes (``data.pending``) stay: standby partitions are restored while the agents
        # run, and their records never touch the keys of the partitions the agents write.
        self._write(writes, offsets)

    def _write(self, writes: Iterable[Write], offsets: Mapping[int, int]) -> None:
        """Write ``writes`` and the changelog offsets in one atomic RocksDB write."""
        files = self.files
        batch = files.batch()
        for key, value, partition in writes:
            files.put(batch, key, value, partition)
        now_ms = int(self.clock() * 1000)
        files.put_offsets(batch, offsets, now_ms)
        files.db.write(batch)
        for partition, offset in offsets.items():
            self._checkpoints[partition] = Checkpoint(offset, now_ms)

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        """Before recovery asks for the offsets: check those loaded from the files against the changelog."""
        changelog = self._changelog()
        tps = [tp for tp in assigned if tp.topic == changelog and tp.partition in self._unchecked]
        if not tps:
            return
        consumer = self.app.consumer
        earliest = await consumer.earliest_offsets(*tps)
        ends = await consumer.highwaters(*tps)
        now_ms = int(self.clock() * 1000)
        for tp in tps:
            self._unchecked.discard(tp.partition)
            checkpoint = self._checkpoints[tp.partition]
            why = untrusted(checkpoint, earliest.get(tp), ends.get(tp), now_ms, self.max_age_ms)
            if why is not None:
                log.warning("table %s partition %d: local state cannot be trusted: %s; rebuilding the partition "
                            "from the changelog", self.table_name, tp.partition, why)
                self._drop({tp.partition})
            else:
                end = ends.get(tp)
                log.info("table %s partition %d: local state at changelog offset %d; %s", self.table_name,
                         tp.partition, checkpoint.offset,
                         "reading the records past it" if end is None
                         else f"{max(end - checkpoint.offset - 1, 0)} records past it to read")

    def _held_partitions(self) -> set[int]:
        return self.files.key_partitions | set(self._checkpoints)

    def _drop(self, partitions: set[int]) -> None:
        files = self.files
        batch = files.batch()
        if partitions & files.key_partitions:  # the one scan of every key's partition, only when it finds some
            for key, partition in files.keys_of(partitions):
                files.put(batch, key, None, partition)
        for partition in partitions:
            files.drop_offset(batch, partition)
        files.db.write(batch)
        files.key_partitions -= partitions
        for partition in partitions:
            self._checkpoints.pop(partition, None)
            self._unchecked.discard(partition)

    def close(self) -> None:
        """Close the files, kept for the next worker on this data dir, and give up the directory."""
        files = getattr(self, "files", None)
        if files is None:
            return
        del self.files
        with contextlib.suppress(Exception):
            files.put_meta(_OPEN, None)
        with contextlib.suppress(Exception):
            files.close()
        self._lock.close()
