"""The changelog offset a table store holds, per partition, and what the stores share because of it.

A store that knows the offset of the last changelog record its data reflects lets table recovery read only the
changelog past it (Faust asks ``persisted_offset`` when a partition is assigned) instead of the whole changelog.
That is sound because of one invariant both stores keep: **a store's data for a partition is the changelog's
state at the offset it holds** (or a state the changelog reaches between that offset and its end, which reading
the records past the offset brings to the end state, records being applied in order and each one a whole value
or a tombstone). The agents' writes reach a store's offsets only once their changelog sends are delivered
(``stream.runtime.faust_output``), and the disk store writes their data in the same atomic write as the offsets
(``stream.state.disk``), so the invariant holds after any stop: a clean one, a SIGKILL between any two
instructions, or a batch cut short.

Who wrote the changelog past the held offset does not matter: another worker that owned the partition in
between appended its records after it, and reading them brings the data to theirs. What can break the invariant
is the changelog itself losing records past the held offset, which ``untrusted`` detects before recovery starts:

- records deleted from its start (a retention, ``DeleteRecords``): the first offset left is past the held one;
- the topic deleted and made again, or emptied: it ends before the held offset;
- tombstones removed by compaction: Kafka keeps a tombstone ``delete.retention.ms`` (24 h by default) after its
  segment is cleaned, so records written since a checkpoint older than that may have lost their tombstones, and
  a key deleted since would come back. ``KPI_LOCAL_STATE_MAX_AGE`` must stay below the changelogs'
  ``delete.retention.ms``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from faust.types import TP

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The offset of the last changelog record a store's partition reflects, and when it was written."""

    offset: int
    written_ms: int


def untrusted(checkpoint: Checkpoint, earliest: int | None, end: int | None, now_ms: int, max_age_ms: int
              ) -> str | None:
    """Why the records past ``checkpoint`` cannot bring the partition's data to the changelog's state, or None
    when they can.

    Args:
        checkpoint: the store's offset for the partition.
        earliest: the changelog partition's first offset still there (None: unknown).
        end: the changelog partition's end offset, one past its last record (None: unknown).
        now_ms: wall-clock milliseconds.
        max_age_ms: the oldest a checkpoint may be (``KPI_LOCAL_STATE_MAX_AGE``).
    """
    if end is not None and checkpoint.offset >= end:
        return (f"the changelog ends at offset {end}, before the local state's offset {checkpoint.offset} "
                "(the topic was emptied or made again)")
    if earliest is not None and earliest > checkpoint.offset + 1:
        return (f"the changelog's records before offset {earliest} were deleted, past the local state's offset "
                f"{checkpoint.offset}")
    age_ms = now_ms - checkpoint.written_ms
    if age_ms > max_age_ms:
        return (f"the local state is {age_ms / 3_600_000:.1f} h old, past KPI_LOCAL_STATE_MAX_AGE "
                f"({max_age_ms / 3_600_000:.1f} h): compaction may have removed tombstones written since")
    return None


def kept_partitions(changelog: str, active_tps: Iterable[TP], standby_tps: Iterable[TP]) -> set[int]:
    """The partitions of ``changelog`` a store keeps once a recovery completes: active and standby ones."""
    return {tp.partition for tps in (active_tps, standby_tps) for tp in tps if tp.topic == changelog}


def last_offsets(records: Iterable[tuple[int, int]]) -> dict[int, int]:
    """The last (highest) offset per partition of (partition, offset) pairs."""
    offsets: dict[int, int] = {}
    for partition, offset in records:
        if offset > offsets.get(partition, -1):
            offsets[partition] = offset
    return offsets


def describe(offsets: Mapping[int, int]) -> str:
    """``p0@12, p3@40``: partitions and offsets, for log lines."""
    return ", ".join(f"p{partition}@{offset}" for partition, offset in sorted(offsets.items())) or "none"
