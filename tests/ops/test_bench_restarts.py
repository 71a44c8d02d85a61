"""The bench's restart figures without a broker: what a worker's log says its recovery read, and stop signals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stream.bench.processes import ManagedProcess
from stream.bench.recovery_log import log_size, read_log, records_past_checkpoints, recovery_records

# Faust's recovery tables as a worker logs them (a topic repeated from the row above is a ditto mark).
HIGHWATERS = """\
[2026-12-03 10:24:23,618] [25865] [INFO] [^---Recovery]: Highwater for active changelog partitions:
+Highwater - Active-----------------------------+-----------+-----------+
| topic                                         | partition | highwater |
+-----------------------------------------------+-----------+-----------+
| run-cells-changelog                           | 0         | 165       |
| \u3003                                            | 1         | 65        |
| run-entity-state-changelog                    | 0         | 250       |
| \u3003                                            | 1         | -1        |
+-----------------------------------------------+-----------+-----------+
"""
STARTS = """\
[2026-12-03 10:24:23,632] [25865] [INFO] [^---Recovery]: active offsets at start of reading:
+Reading Starts At - Active---------------------+-----------+--------+
| topic                                         | partition | offset |
+-----------------------------------------------+-----------+--------+
| run-cells-changelog                           | 0         | 160    |
| \u3003                                            | 1         | 65     |
| run-entity-state-changelog                    | 0         | -1     |
| \u3003                                            | 1         | -1     |
+-----------------------------------------------+-----------+--------+
[2026-12-03 10:24:23,653] [25865] [INFO] [^---Recovery]: Resuming flow...
"""


@pytest.mark.parametrize(("text", "expected"), [
    ("", None),  # no recovery of active partitions
    (HIGHWATERS + STARTS, 5 + 0 + 251 + 0),  # highwater is the last offset; a start of -1 reads from offset 0
    (HIGHWATERS, 166 + 66 + 251 + 0),  # no start table after the highwaters: every record is read
    (HIGHWATERS + STARTS + HIGHWATERS.replace("165", "170") + STARTS, 10 + 0 + 251 + 0),  # the last one counts
])
def test_the_records_a_recovery_reads_are_the_highwaters_past_the_start_offsets(text: str,
                                                                                expected: int | None) -> None:
    assert recovery_records(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("table cells: no local state in /d/db; restoring it from the changelog", None),
    ("table cells partition 2: local state at changelog offset 60; 0 records past it to read", 0),
    ("table cells partition 2: local state at changelog offset 60; 12 records past it to read\n"
     "table entity-state partition 0: local state at changelog offset 9; 30 records past it to read", 42),
])
def test_the_records_past_the_local_state_are_summed_over_partitions(text: str, expected: int | None) -> None:
    assert records_past_checkpoints(text) == expected


def test_a_log_is_read_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    assert (log_size(log), read_log(log)) == (0, "")
    log.write_text("before the kill\n")
    start = log_size(log)
    with log.open("a") as appended:
        appended.write("after the kill\n")
    assert read_log(log, start) == "after the kill\n"


@pytest.mark.parametrize("signal_name", ["stop", "kill"])
def test_the_moment_a_process_is_signalled_is_kept(tmp_path: Path, signal_name: str) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with ManagedProcess("sleeper", argv, {}, tmp_path / "sleeper.log", tmp_path) as sleeper:
        getattr(sleeper, signal_name)()
    assert sleeper.signalled_at is not None and sleeper.signalled_at >= sleeper.spawned
    assert sleeper.returncode == (-15 if signal_name == "stop" else -9)

