"""The disk store's files: a corrupted block is found when they are read back, and the files rebuilt; a scan while
processing that meets one raises."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream.state.disk import FORMAT_VERSION, DiskStore, LocalFiles, LocalTable


def test_a_corrupted_block_in_the_middle_of_the_files_fails_the_read_back(tmp_path: Path) -> None:
    files = LocalFiles(tmp_path / "db")
    batch = files.batch()
    for number in range(2_000):  # several data blocks in one .sst file
        files.put(batch, f"key-{number:05}".encode(), f"value {number} ".encode() * 8, number % 4)
    files.db.write(batch)
    assert files.verify() == 4_000
    files.close()
    sst = max((tmp_path / "db").glob("*.sst"), key=lambda path: path.stat().st_size)  # the close flushed them
    with sst.open("r+b") as file:
        file.seek(sst.stat().st_size // 3)  # a data block: index, filter and footer are at the end
        file.write(b"\xa5" * 64)
    files = LocalFiles(tmp_path / "db")
    try:
        with pytest.raises(Exception, match="[Cc]orruption"):
            files.verify()
    finally:
        files.close()


def test_files_with_a_corrupted_block_are_rebuilt_in_place(tmp_path: Path) -> None:
    files = LocalFiles(tmp_path / "db")
    batch = files.batch()
    for number in range(2_000):
        files.put(batch, f"key-{number:05}".encode(), f"value {number} ".encode() * 8, number % 4)
    identity = {"format": FORMAT_VERSION, "app_id": "app", "table": "cells", "partitions": 4}
    files.db.write(batch)
    files.put_meta(b"identity", orjson.dumps(identity))
    files.close()
    sst = max((tmp_path / "db").glob("*.sst"), key=lambda path: path.stat().st_size)
    with sst.open("r+b") as file:
        file.seek(sst.stat().st_size // 3)
        file.write(b"\xa5" * 64)
    # Only what ``_open`` uses of the store: no app, no table.
    store = object.__new__(DiskStore)
    store.identity, store.table_name = identity, "cells"
    rebuilt = store._open(tmp_path / "db")
    try:
        assert rebuilt.verify() == 1  # the new files' identity record alone
    finally:
        rebuilt.close()


def _damaged_files(path: Path) -> LocalFiles:
    """Files of 2,000 keys in four partitions, one data block in the middle of their largest table file
    overwritten, opened again without the read-back."""
    files = LocalFiles(path)
    batch = files.batch()
    for number in range(2_000):
        files.put(batch, f"key-{number:05}".encode(), f"value {number} ".encode() * 8, number % 4)
    files.db.write(batch)
    files.close()
    sst = max(path.glob("*.sst"), key=lambda table_file: table_file.stat().st_size)
    with sst.open("r+b") as file:
        file.seek(sst.stat().st_size // 3)
        file.write(b"\xa5" * 64)
    return LocalFiles(path)


def test_a_scan_of_damaged_files_while_processing_raises_rather_than_missing_keys(tmp_path: Path) -> None:
    files = _damaged_files(tmp_path / "db")
    try:
        with pytest.raises(Exception, match="[Cc]orruption"):
            list(LocalTable(files).items())
    finally:
        files.close()
