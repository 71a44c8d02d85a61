"""The memory store's data: one dict per partition, read as one mapping."""

from __future__ import annotations

import pytest

from stream.state.memory import PartitionedData


def test_partitioned_data_reads_every_partition_s_keys_as_one_mapping() -> None:
    data = PartitionedData()
    data.put(b"a", b"1", 0)
    data.put(b"b", b"2", 3)
    data.put(b"a", b"one", 0)
    assert data[b"a"] == b"one" and data.get(b"b") == b"2" and data.get(b"c", b"-") == b"-"
    assert b"b" in data and b"c" not in data and len(data) == 2
    assert dict(data.items()) == {b"a": b"one", b"b": b"2"} and sorted(data) == [b"a", b"b"]
    assert [data.partition_of(key) for key in (b"a", b"b", b"c")] == [0, 3, None]
    data[b"b"] = b"two"  # an existing key is set where it is
    assert data.parts == {0: {b"a": b"one"}, 3: {b"b": b"two"}}
    assert data.pop(b"a") == b"one" and data.pop(b"a", None) is None
    with pytest.raises(KeyError):
        data[b"a"]
    with pytest.raises(KeyError):
        del data[b"a"]


def test_partitioned_data_refuses_a_new_key_without_its_partition() -> None:
    data = PartitionedData()
    with pytest.raises(KeyError, match="with its partition"):
        data[b"new"] = b"1"
    assert not data


def test_a_key_put_in_another_partition_leaves_the_first() -> None:
    data = PartitionedData()
    data.put(b"k", b"1", 1)
    data.put(b"k", b"2", 2)
    assert data.parts == {1: {}, 2: {b"k": b"2"}} and data[b"k"] == b"2" and len(data) == 1
