"""An agent's feed: the messages fetched for it, taken in batches that end as soon as nothing more is waiting.

Faust hands each message to an agent through its conductor, an event, a channel queue, the stream iterator and
its sensors, which on a backlog cost more than the bare Faust agent's own counting (one profile: about a fifth
of the worker's samples). The consumer puts the messages of an agent's topics here instead (see
``stream.transport.Consumer``), and the agent takes them a batch at a time.

A batch takes what has already arrived and ends when the feed is empty (or the batch is full): a message that
arrives alone is processed at once, and under load the batches grow by themselves, since messages pile up while
the previous batch is processed. Faust's ``noack_take`` instead waits a fixed interval from the start of each
wait, whatever arrives, and every hop of the pipeline held each event that long.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Feed(Generic[T]):
    """A bounded first-in first-out buffer between the consumer, which puts, and one agent, which takes batches.

    It is full at ``maxsize`` items or ``max_bytes`` bytes (``size`` of each item), whichever comes first: input
    messages are single events of a few hundred bytes, and a bound in messages that keeps the internal ones
    (up to a thousand events each) in check made the ingest agent's batches too small to fill a round trip.
    ``full`` tells the consumer to wait (``wait_room``) before it puts more; ``clear`` empties it, as faust's
    flow control empties the agents' queues at a rebalance (``app.flow_control.manage_queue``).
    """

    def __init__(self, maxsize: int, max_bytes: int = 1 << 62, size: Callable[[T], int] = lambda item: 0
                 ) -> None:
        if maxsize < 1:
            raise ValueError(f"a feed holds at least one message, not {maxsize}")
        if max_bytes < 1:
            raise ValueError(f"a feed holds at least one byte, not {max_bytes}")
        self.maxsize, self.max_bytes, self._size = maxsize, max_bytes, size
        self.bytes = 0  # the ``size`` of the items held
        self._items: deque[T] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        """Whether the feed holds ``maxsize`` items or ``max_bytes`` bytes or more (a put is still accepted: the
        consumer decides)."""
        return len(self._items) >= self.maxsize or self.bytes >= self.max_bytes

    def put(self, item: T) -> None:
        """Append ``item``; the agent's next batch takes it."""
        self._items.append(item)
        self.bytes += self._size(item)
        self._arrived.set()
        if self.full():
            self._room.clear()

    async def wait_room(self) -> None:
        """Return once the feed is no longer full."""
        await self._room.wait()

    async def take(self, max_size: int) -> list[T]:
        """The items that have arrived, oldest first, at most ``max_size``; waits while there are none."""
        if max_size < 1:
            raise ValueError(f"a batch holds at least one message, not {max_size}")
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        items = self._items
        batch = [items.popleft() for _ in range(min(max_size, len(items)))]
        size = self._size
        self.bytes -= sum(size(item) for item in batch)
        if not self.full():
            self._room.set()
        return batch

    def clear(self) -> None:
        """Drop every item (their offsets were not acked, so they are read again)."""
        self._items.clear()
        self.bytes = 0
        self._room.set()
