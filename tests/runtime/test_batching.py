"""Batches taken straight from an agent's queue, ending as soon as nothing more is waiting."""

from __future__ import annotations

import asyncio

import pytest
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from stream.runtime.batching import queued_batches


async def batches_of(arrivals: list[list[int]], max_size: int) -> list[list[int]]:
    """The batches formed when each list of ``arrivals`` lands in the queue at once, one list after the other.

    The next list arrives only after the batches of the previous one were handled, the way a fetch response lands
    in an agent's queue while the agent waits.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    batches: list[list[int]] = []
    pending = list(arrivals)
    expected = sum(len(each) for each in arrivals)

    def arrive() -> None:
        for item in pending.pop(0) if pending else []:
            queue.put_nowait(item)

    arrive()
    async for batch in queued_batches(queue, max_size):
        batches.append(batch)
        if sum(len(each) for each in batches) == expected:
            return batches
        if queue.empty():
            arrive()
    raise AssertionError("the batches ended")


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
        batches: list[list[int]] = []
        first_taken, rest_arrived = asyncio.Event(), asyncio.Event()

        async def arrive_later() -> None:
            await asyncio.sleep(0)  # the batches wait for the first event before it arrives
            queue.put_nowait(1)
            await first_taken.wait()
            for item in (2, 3, 4):  # arrive while the first batch is being handled
                queue.put_nowait(item)
            rest_arrived.set()

        arriving = asyncio.create_task(arrive_later())
        async for batch in queued_batches(queue, 100):
            batches.append(batch)
            if len(batches) == 1:
                first_taken.set()
                await rest_arrived.wait()  # handling the first batch until all the rest has arrived
            if len(batches) == 2:
                break
        await arriving
        return batches

    assert asyncio.run(run()) == [[1], [2, 3, 4]]


def test_an_error_thrown_into_the_agent_s_queue_ends_the_batches() -> None:
    # Faust throws a channel's errors into its queue; the agent must see them, as its stream iterator did.
    async def run() -> list[list[int]]:
        queue: ThrowableQueue[int] = ThrowableQueue(flow_control=FlowControlEvent(initially_suspended=False))
        queue.put_nowait(1)
        batches: list[list[int]] = []
        async for batch in queued_batches(queue, 100):
            batches.append(batch)
            queue._throw(RuntimeError("decode failed"))
        return batches

    with pytest.raises(RuntimeError, match="decode failed"):
        asyncio.run(run())


def test_a_batch_size_below_one_is_refused() -> None:
    async def first() -> list[int]:
        async for batch in queued_batches(asyncio.Queue(), 0):
            return batch
        return []

    with pytest.raises(ValueError, match="at least one event"):
        asyncio.run(first())


def test_the_batches_end_when_faust_stops_the_agent() -> None:
    # Faust throws StopAsyncIteration into an agent's queue to end its stream; raised out of an async generator
    # it would crash the agent instead (RuntimeError) and make the worker's stop fail.
    async def run() -> list[list[int]]:
        queue: ThrowableQueue[int] = ThrowableQueue(flow_control=FlowControlEvent(initially_suspended=False))
        queue.put_nowait(1)
        queue.put_nowait(2)
        batches: list[list[int]] = []
        async for batch in queued_batches(queue, 100):
            batches.append(batch)
            queue._throw(StopAsyncIteration())
        return batches

    assert asyncio.run(run()) == [[1, 2]]
