"""Deterministic partitioning of internal topics (only this service reads them)."""

from __future__ import annotations

import zlib


def partition_for(key: str, partitions: int) -> int:
    """The internal-topic partition of a routing key."""
    return zlib.crc32(key.encode("utf-8")) % partitions



def source_name(topic: str, partition: int) -> str:
    """How an input partition is named in watermark reports."""
    return f"{topic}:{partition}"
