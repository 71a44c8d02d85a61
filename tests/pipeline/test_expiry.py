"""Event ids kept for deduplication are forgotten by the minute of their event time, in any order of arrival."""

from __future__ import annotations

import random

import orjson

from stream.pipeline.entities.dedup import EXPIRY_BUCKET_MS, ExpiryIndex, SeenValues

MINUTE = EXPIRY_BUCKET_MS


def test_keys_are_forgotten_once_their_minute_has_ended_before_the_horizon() -> None:
    index = ExpiryIndex()
    times = {b"a": 10 * MINUTE, b"b": 10 * MINUTE + 59_999, b"c": 11 * MINUTE, b"d": 3 * MINUTE, b"e": 30 * MINUTE}
    for key, ts in random.Random(3).sample(sorted(times.items()), k=len(times)):
        index.add(ts, key)
    assert index.expire(10 * MINUTE + 59_999) == [b"d"]  # a and b: their minute has not ended yet
    assert sorted(index.expire(11 * MINUTE)) == [b"a", b"b"]
    assert index.expire(11 * MINUTE) == []  # forgotten once only
    assert sorted(index.expire(40 * MINUTE)) == [b"c", b"e"]
    assert index.buckets == {} and index.order == []


def test_nothing_is_kept_longer_than_a_minute_past_its_horizon_nor_forgotten_before_it() -> None:
    rand = random.Random(11)
    index = ExpiryIndex()
    added = {f"k{n}".encode(): rand.randrange(0, 500 * MINUTE) for n in range(2000)}
    for key, ts in added.items():
        index.add(ts, key)
    forgotten: set[bytes] = set()
    for horizon in range(0, 520 * MINUTE, 7_919):
        forgotten.update(index.expire(horizon))
        assert all(added[key] < horizon for key in forgotten)  # never before its time
        assert all(added[key] >= horizon - MINUTE for key in added.keys() - forgotten)  # at most a minute after
    assert forgotten == set(added)


def test_kept_ids_of_one_minute_and_partition_share_one_value_that_expires_with_their_minute() -> None:
    value = SeenValues()
    first = value(5 * MINUTE + 17, 2)
    assert value(5 * MINUTE + MINUTE - 1, 2) is first
    assert orjson.loads(first) == [5 * MINUTE, 2]
    assert value(6 * MINUTE, 2) is not first and value(5 * MINUTE + 17, 3) is not first
    for ts in (-1, -MINUTE, 0, 59_999, 60_000, 1_796_199_232_268):
        stored, owner = orjson.loads(value(ts, 1))
        assert stored // EXPIRY_BUCKET_MS == ts // EXPIRY_BUCKET_MS and owner == 1  # the same expiry minute


def test_the_shared_values_start_again_past_their_limit() -> None:
    value = SeenValues()
    first = value(0, 0)
    for minute in range(1, SeenValues.LIMIT + 1):
        value(minute * MINUTE, 0)
    assert len(value._values) <= SeenValues.LIMIT
    assert value(0, 0) == first
