"""Batches that end as soon as nothing more is waiting.

Faust's ``noack_take`` ends a batch when it is full or when a fixed interval has passed since it began waiting,
so every hop of the pipeline holds each event for up to that interval even when nothing else is coming. A batch
here takes what has already arrived and ends when the agent's queue is empty (or the batch is full): an event
that arrives alone is processed at once, and under load the batches grow by themselves, since events pile up in
the queue while the previous batch is processed.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")


async def ready_batches(events: AsyncIterable[T], waiting: Callable[[], bool], max_size: int
                        ) -> AsyncIterator[list[T]]:
    """Group ``events`` into batches of at most ``max_size``, each ending when ``waiting()`` is false.

    Args:
        events: the agent's events, in order.
        waiting: whether another event has already arrived (the agent's queue is not empty).
        max_size: the most events in one batch.
    """
    if max_size < 1:
        raise ValueError(f"a batch holds at least one event, not {max_size}")
    batch: list[T] = []
    async for event in events:
        batch.append(event)
        if len(batch) >= max_size or not waiting():
            yield batch
            batch = []
