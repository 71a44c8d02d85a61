"""Which events of a batch collected across a rebalance the agents may process."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream.app import current_events


def event(offset: int, generation: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(offset=offset, generation_id=generation))


def test_events_fetched_in_the_current_generation_are_kept_in_order() -> None:
    batch = [event(1, 7), event(2, 7), event(3, 7)]
    assert current_events(batch, 7, flowing=True) == batch


def test_events_fetched_before_the_last_rebalance_are_left_out() -> None:
    stale, fresh = [event(40, 6), event(41, 6)], [event(40, 7)]
    assert current_events(stale + fresh, 7, flowing=True) == fresh


def test_nothing_is_processed_between_a_revocation_and_the_next_assignment() -> None:
    # Faust stops the flow when partitions are revoked; the generation changes only at the next assignment.
    assert current_events([event(1, 7), event(2, 7)], 7, flowing=False) == []
