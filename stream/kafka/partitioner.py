"""Kafka's default partitioner, each key's hash computed once.

The KPI records are keyed, and their keys repeat revision after revision (one key per KPI, window and
dimensions), while aiokafka computes the Java client's murmur2 of every key in pure Python: 4 % of a live
worker's samples at 2,000 events/s (py-spy, one profile). The partition chosen is the default partitioner's, so
a record keeps the partition earlier versions sent its key to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from aiokafka.partitioner import murmur2

# Distinct keys whose hash is kept: the KPI keys a worker revises at a time are a few thousand (open windows times
# dimensions); at about 250 bytes an entry this bounds the cache at about 4 MB.
KEYS_KEPT = 16_384


@lru_cache(maxsize=KEYS_KEPT)
def _positive_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


class KeyPartitioner:
    """The partition of a record: murmur2 of its key modulo the partition count, as Kafka's Java client and
    aiokafka's ``DefaultPartitioner`` choose it; a record without a key goes to a random available partition."""

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # noqa: S311 - spreading load, not a secret
        return all_partitions[_positive_hash(key) % len(all_partitions)]
