"""The disk store's mapping behaves as a dict of bytes, and a killed worker's files are cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.store import PREFIX, DiskMapping, remove_orphans


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
