"""What a worker's log says about its table recovery: how many changelog records it had to read."""

from __future__ import annotations

import re
from pathlib import Path

# The disk store's line for a partition whose local state it reuses (stream.state.disk.DiskStore.on_rebalance).
PAST_CHECKPOINT = re.compile(r"(\d+) records past it to read")
# Faust's recovery logs two tables per rebalance: the last changelog offset of each active partition, and the
# offset its local state already holds (-1: none). Their difference is what it reads before the worker resumes.
HIGHWATER_TITLE = "+Highwater - Active"
START_TITLE = "+Reading Starts At - Active"
DITTO = "\u3003"  # what Faust writes in place of a topic name repeated from the row above


def read_log(path: Path, start: int = 0) -> str:
    """The log's text from byte ``start`` on ("" when it cannot be read)."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(start)
            return log_file.read().decode(errors="replace")
    except OSError:
        return ""


def log_size(path: Path) -> int:
    """The log's size in bytes now (0 when it is not there), to read only what is written after."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def records_past_checkpoints(text: str) -> int | None:
    """The sum of the disk store's "N records past it to read" over every table partition (None: no such line,
    so no local state was reused)."""
    found = [int(count) for count in PAST_CHECKPOINT.findall(text)]
    return sum(found) if found else None


def logged_table(lines: list[str], start: int) -> dict[tuple[str, int], int]:
    """The rows of a Faust log table whose title line is ``lines[start]``: (topic, partition) -> number.

    A topic's name is written on its first row only; the rows after it have a ditto mark (or nothing) there.
    """
    rows: dict[tuple[str, int], int] = {}
    topic = ""
    for line in lines[start + 1:]:
        if line.startswith("+"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not line.startswith("|"):
            break
        name, partition, number = cells
        if not partition.isdigit():
            continue  # the header row
        topic = name if name not in ("", DITTO) else topic
        rows[(topic, int(partition))] = int(number)
    return rows


def recovery_records(text: str) -> int | None:
    """Changelog records of the active table partitions the last recovery in ``text`` had to read (None: the
    text has no recovery of active partitions)."""
    lines = text.splitlines()
    highwater_at = [number for number, line in enumerate(lines) if line.startswith(HIGHWATER_TITLE)]
    start_at = [number for number, line in enumerate(lines) if line.startswith(START_TITLE)]
    if not highwater_at:
        return None
    highwaters = logged_table(lines, highwater_at[-1])
    starts = logged_table(lines, start_at[-1]) if start_at and start_at[-1] > highwater_at[-1] else {}
    return sum(max(last - starts.get(tp, -1), 0) for tp, last in highwaters.items())
