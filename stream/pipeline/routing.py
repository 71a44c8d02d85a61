"""Deterministic partitioning of internal topics (only this service reads them)."""

from __future__ import annotations

import zlib

# Events in one envelope are numbered below this; a position is offset * SLOTS + index.
POSITION_SLOTS = 100_000


def partition_for(key: str, partitions: int) -> int:
    """The internal-topic partition of a routing key."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def position(offset: int, index: int) -> int:
    """A number that grows along an internal partition: one per event of each envelope."""
    return offset * POSITION_SLOTS + index


def source_name(topic: str, partition: int) -> str:
    """How an input partition is named in watermark reports."""
    return f"{topic}:{partition}"
