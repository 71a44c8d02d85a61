"""Where a disk store's files live: one directory per table under ``KPI_DATA_DIR``, taken by one worker process
at a time (a lock file), and the per-process directories of an earlier version, deleted once their process is
gone."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import IO

PRIVATE_PREFIX = "disk-"  # an earlier version's files of one process (``disk-<pid>-<table>``)


def _lock(path: Path) -> IO[bytes] | None:
    """An exclusive lock on ``path`` for this process (None when another process holds it)."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def take_slot(tables_dir: Path, name: str) -> tuple[Path, IO[bytes]]:
    """The first of ``name``, ``name.2``, ``name.3``, ... no other process holds, locked for this one."""
    slot = 1
    while True:
        directory = tables_dir / (name if slot == 1 else f"{name}.{slot}")
        directory.mkdir(exist_ok=True)
        lock = _lock(directory / "lock")
        if lock is not None:
            lock.truncate(0)
            lock.write(f"worker pid {os.getpid()}\n".encode())
            lock.flush()
            return directory, lock
        slot += 1


def _owner_alive(directory: Path) -> bool:
    """Whether the process that made a store directory of an earlier version (``disk-<pid>-<table>``) still runs."""
    try:
        pid = int(directory.name.removeprefix(PRIVATE_PREFIX).split("-", 1)[0])
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
    """Delete the store directories an earlier version made per process (``disk-<pid>-<table>``, never reused)
    whose process no longer runs; the ones deleted."""
    removed = []
    if tables_dir.is_dir():
        for directory in tables_dir.glob(f"{PRIVATE_PREFIX}*"):
            if directory.is_dir() and not _owner_alive(directory):
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory)
    return removed


def safe_name(name: str) -> str:
    """``name`` with every character a file name should not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
