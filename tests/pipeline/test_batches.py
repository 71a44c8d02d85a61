"""Which messages of a batch taken across a rebalance the agents may process."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream.app import current_messages, mark_inbound


def message(offset: int, generation: int) -> Any:
    return SimpleNamespace(offset=offset, generation_id=generation)


def test_messages_fetched_in_the_current_generation_are_kept_in_order() -> None:
    batch = [message(1, 7), message(2, 7), message(3, 7)]
    assert current_messages(batch, 7, flowing=True) == batch


def test_messages_fetched_before_the_last_rebalance_are_left_out() -> None:
    stale, fresh = [message(40, 6), message(41, 6)], [message(40, 7)]
    assert current_messages(stale + fresh, 7, flowing=True) == fresh


def test_nothing_is_processed_between_a_revocation_and_the_next_assignment() -> None:
    # Faust stops the flow when partitions are revoked; the generation changes only at the next assignment.
    assert current_messages([message(1, 7), message(2, 7)], 7, flowing=False) == []


def test_taking_a_batch_notes_each_partition_for_faust_s_livelock_check() -> None:
    # Faust logs an error for a partition with messages to read whose stream took none for 5 minutes, judged by
    # the time its monitor noted per stream event; the agents take from feeds, so they note it per batch.
    monitor = SimpleNamespace(stream_inbound_time={("other", 0): 1.0})
    batch = [SimpleNamespace(tp=("t", 0)), SimpleNamespace(tp=("t", 1)), SimpleNamespace(tp=("t", 0))]
    mark_inbound(monitor, batch, 42.0)
    assert monitor.stream_inbound_time == {("other", 0): 1.0, ("t", 0): 42.0, ("t", 1): 42.0}
