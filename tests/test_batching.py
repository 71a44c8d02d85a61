"""Batches that end as soon as nothing more is waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from stream.batching import ready_batches

DONE = -1


async def drain(queue: asyncio.Queue[int]) -> AsyncIterator[int]:
    """The events put in ``queue`` until ``DONE``, like an agent's stream over its channel's queue."""
    while (item := await queue.get()) != DONE:
        yield item


async def batches_of(arrivals: list[list[int]], max_size: int) -> list[list[int]]:
    """The batches formed when each list of ``arrivals`` lands in the queue at once, one list after the other.

    The next list arrives only after the batches of the previous one were handled, the way a fetch response lands
    in an agent's queue while the agent waits.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    batches: list[list[int]] = []
    pending = list(arrivals)

    def arrive() -> None:
        for item in pending.pop(0) if pending else [DONE]:
            queue.put_nowait(item)

    arrive()
    async for batch in ready_batches(drain(queue), lambda: not queue.empty(), max_size):
        batches.append(batch)
        if queue.empty():
            arrive()
    return batches


@pytest.mark.parametrize(
    ("arrivals", "max_size", "expected"),
    [
        # An event that arrives alone is a batch of its own at once: nothing waits for company.
        ([[1], [2], [3]], 100, [[1], [2], [3]]),
        # What has arrived together is taken together.
        ([[1, 2, 3], [4, 5]], 100, [[1, 2, 3], [4, 5]]),
        # A full batch ends even when more is waiting; the rest follows in the next one.
        ([[1, 2, 3, 4, 5]], 2, [[1, 2], [3, 4], [5]]),
        ([[1, 2, 3, 4]], 2, [[1, 2], [3, 4]]),
        ([[1, 2, 3], [4]], 1, [[1], [2], [3], [4]]),
    ],
)
def test_a_batch_ends_when_the_queue_is_empty_or_the_batch_is_full(
        arrivals: list[list[int]], max_size: int, expected: list[list[int]]) -> None:
    assert asyncio.run(batches_of(arrivals, max_size)) == expected


def test_events_arriving_while_a_batch_is_handled_make_the_next_batch() -> None:
    async def run() -> list[list[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(1)
        batches: list[list[int]] = []
        async for batch in ready_batches(drain(queue), lambda: not queue.empty(), 100):
            batches.append(batch)
            if len(batches) == 1:
                for item in (2, 3, 4):  # arrive while the first batch is being handled
                    queue.put_nowait(item)
                await asyncio.sleep(0)
            if len(batches) == 2:
                queue.put_nowait(DONE)
        return batches

    assert asyncio.run(run()) == [[1], [2, 3, 4]]


def test_a_batch_size_below_one_is_refused() -> None:
    async def first() -> list[int]:
        async for batch in ready_batches(drain(asyncio.Queue()), lambda: False, 0):
            return batch
        return []

    with pytest.raises(ValueError, match="at least one event"):
        asyncio.run(first())
