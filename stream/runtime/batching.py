"""Batches taken straight from an agent's queue, ending as soon as nothing more is waiting.

Faust's ``noack_take`` ends a batch when it is full or when a fixed interval has passed since it began waiting,
so every hop of the pipeline would hold each event for up to that interval even when nothing else is coming. A
batch here takes what has already arrived and ends when the agent's queue is empty (or the batch is full): an
event that arrives alone is processed at once, and under load the batches grow by themselves, since events pile
up in the queue while the previous batch is processed.

The events are taken from the queue the consumer's conductor fills, in one synchronous sweep, not one by one
through Faust's stream iterator. That iterator yields to the event loop after every event, runs its sensors and
tracks each message (with our batching over it, 6 % of a worker's samples on a backlog, one profile); and
because it yields, the message loop refilled the full queue one message at a time in between, each time through
Faust's race for a full queue (four tasks per message; 16 % inclusive). Swept at once, the queue empties and the
message loop fills it again without waiting.
What the iterator did that matters is done elsewhere: events of an earlier generation or taken while the flow
is stopped are dropped by the batch loop (``stream.runtime.batches.current_events``), acks go through the
consumer's gate, and the worker notes each batch's partitions in Faust's monitor for its livelock check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class EventQueue(Protocol[T_co]):
    """What is read of an agent's queue (Faust's ``ThrowableQueue``): its ``get`` raises what was thrown into it."""

    def empty(self) -> bool: ...

    async def get(self) -> T_co: ...

    def get_nowait(self) -> T_co: ...


async def queued_batches(queue: EventQueue[T], max_size: int) -> AsyncIterator[list[T]]:
    """Batches of at most ``max_size`` events from ``queue``, in order: each waits for one event, then takes
    whatever else is already there. They end when ``StopAsyncIteration`` is thrown into the queue, as Faust's
    stream iterator did; any other error thrown into it is raised.

    Args:
        queue: the agent's queue.
        max_size: the most events in one batch.
    """
    if max_size < 1:
        raise ValueError(f"a batch holds at least one event, not {max_size}")
    while True:
        try:
            batch = [await queue.get()]
            while len(batch) < max_size and not queue.empty():
                batch.append(queue.get_nowait())
        except StopAsyncIteration:  # thrown into the queue when Faust stops the agent: the events end
            return
        yield batch
