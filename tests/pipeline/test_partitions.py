"""The owned partitions' indexes both internal stages keep."""

from __future__ import annotations

from stream.pipeline.partitions import OwnedIndexes


def test_one_scan_indexes_the_partition_batched_and_every_other_owned_one_not_indexed_yet() -> None:
    owned: OwnedIndexes[str] = OwnedIndexes()
    owned.assign([0, 2, 5])
    assert owned.unindexed(2) == {0, 2, 5}
    owned.add({p: f"index {p}" for p in owned.unindexed(2)})
    assert owned.unindexed(2) == set() and owned.get(5) == "index 5"
    # A partition batched though not (yet) assigned is indexed alone.
    assert owned.unindexed(7) == {7}


def test_a_forgotten_partition_is_indexed_again_when_it_comes_back() -> None:
    owned: OwnedIndexes[str] = OwnedIndexes()
    owned.assign([0, 1])
    owned.add({0: "old 0", 1: "old 1"})
    owned.forget([1])
    assert owned.get(1) is None and list(owned.values()) == ["old 0"]
    owned.assign([0, 1])  # a rebalance assigns every owned partition again
    assert owned.unindexed(0) == {1}
