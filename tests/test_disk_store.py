"""The disk store's files: a corrupted block is found when they are read back, not reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.disk_store import LocalFiles


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
