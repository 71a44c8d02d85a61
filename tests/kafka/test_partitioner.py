"""The producer's partitioner: Kafka's default choice, each key hashed once."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream.kafka import partitioner
from stream.kafka.partitioner import KeyPartitioner


@pytest.mark.parametrize("partitions", [1, 3, 8, 12])
def test_a_key_goes_where_the_default_partitioner_sends_it(partitions: int) -> None:
    rand = random.Random(partitions)
    keys = [rand.randbytes(rand.randrange(0, 120)) for _ in range(2000)] + [b"cost-per-lead|1h|2026-11-01T00:00Z|"]
    all_partitions = list(range(partitions))
    ours, kafkas = KeyPartitioner(), DefaultPartitioner()
    for key in keys:
        assert ours(key, all_partitions, all_partitions) == kafkas(key, all_partitions, all_partitions), key
        assert ours(key, all_partitions, []) == kafkas(key, all_partitions, all_partitions)  # twice: from the cache


def test_each_key_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    partitioner._positive_hash.cache_clear()
    hashed: list[bytes] = []
    real = partitioner.murmur2
    monkeypatch.setattr(partitioner, "murmur2", lambda key: hashed.append(key) or real(key))
    choose = KeyPartitioner()
    for _ in range(5):
        for key in (b"a", b"b", b"a"):
            choose(key, [0, 1, 2], [0, 1, 2])
    assert hashed == [b"a", b"b"]


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    choose = KeyPartitioner()
    assert {choose(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {choose(None, [0, 1], []) for _ in range(50)} == {0, 1}


def test_the_worker_producer_uses_it() -> None:
    from stream.app import faust_app
    from stream.settings import Settings

    app = faust_app(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "localhost:9"}))
    assert isinstance(app.conf.producer_partitioner, KeyPartitioner)
