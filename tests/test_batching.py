"""An agent's feed: batches that end as soon as nothing more is waiting, and a bound the consumer waits on."""

from __future__ import annotations

import asyncio

import pytest

from stream.batching import Feed


async def batches_of(arrivals: list[list[int]], max_size: int) -> list[list[int]]:
    """The batches taken when each list of ``arrivals`` lands in the feed at once, one list after the other.

    The next list arrives only after the batches of the previous one were taken, the way a fetch response lands
    in an agent's feed while the agent waits.
    """
    feed: Feed[int] = Feed(1000)
    batches: list[list[int]] = []
    for arrival in arrivals:
        for item in arrival:
            feed.put(item)
        while len(feed):
            batches.append(await feed.take(max_size))
    return batches


@pytest.mark.parametrize(
    ("arrivals", "max_size", "expected"),
    [
        # A message that arrives alone is a batch of its own at once: nothing waits for company.
        ([[1], [2], [3]], 100, [[1], [2], [3]]),
        # What has arrived together is taken together.
        ([[1, 2, 3], [4, 5]], 100, [[1, 2, 3], [4, 5]]),
        # A full batch ends even when more is waiting; the rest follows in the next one.
        ([[1, 2, 3, 4, 5]], 2, [[1, 2], [3, 4], [5]]),
        ([[1, 2, 3, 4]], 2, [[1, 2], [3, 4]]),
        ([[1, 2, 3], [4]], 1, [[1], [2], [3], [4]]),
    ],
)
def test_a_batch_ends_when_the_feed_is_empty_or_the_batch_is_full(
        arrivals: list[list[int]], max_size: int, expected: list[list[int]]) -> None:
    assert asyncio.run(batches_of(arrivals, max_size)) == expected


def test_a_take_waits_for_the_first_message_and_messages_arriving_meanwhile_make_the_next_batch() -> None:
    async def run() -> list[list[int]]:
        feed: Feed[int] = Feed(10)
        waiting = asyncio.create_task(feed.take(100))
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing has arrived yet
        feed.put(1)
        first = await waiting
        for item in (2, 3, 4):  # arrive while the first batch is being handled
            feed.put(item)
        return [first, await feed.take(100)]

    assert asyncio.run(run()) == [[1], [2, 3, 4]]


def test_a_full_feed_makes_the_consumer_wait_until_a_batch_is_taken() -> None:
    async def run() -> None:
        feed: Feed[int] = Feed(3)
        for item in (1, 2):
            feed.put(item)
        assert not feed.full()
        feed.put(3)
        assert feed.full()
        room = asyncio.create_task(feed.wait_room())
        await asyncio.sleep(0)
        assert not room.done()
        assert await feed.take(2) == [1, 2]
        await asyncio.wait_for(room, 1)
        assert not feed.full() and await feed.take(10) == [3]

    asyncio.run(run())


def test_a_batch_smaller_than_the_backlog_leaves_the_feed_full_when_it_stays_at_the_bound() -> None:
    async def run() -> None:
        feed: Feed[int] = Feed(2)
        for item in (1, 2, 3, 4):  # the consumer decides whether to put past the bound; the feed accepts it
            feed.put(item)
        assert await feed.take(1) == [1]
        assert feed.full()  # 3 left, still at or past the bound
        room = asyncio.create_task(feed.wait_room())
        await asyncio.sleep(0)
        assert not room.done()
        assert await feed.take(2) == [2, 3]
        await asyncio.wait_for(room, 1)

    asyncio.run(run())


def test_clearing_drops_every_message_and_frees_the_room() -> None:
    async def run() -> None:
        feed: Feed[int] = Feed(2)
        feed.put(1)
        feed.put(2)
        feed.clear()
        assert len(feed) == 0 and not feed.full()
        await asyncio.wait_for(feed.wait_room(), 1)
        feed.put(3)
        assert await feed.take(10) == [3]

    asyncio.run(run())


def test_a_bound_or_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        Feed(0)
    with pytest.raises(ValueError, match="at least one byte"):
        Feed(5, 0)

    async def take_none() -> list[int]:
        return await Feed[int](5).take(0)

    with pytest.raises(ValueError, match="at least one message"):
        asyncio.run(take_none())


def test_a_feed_is_full_at_its_bytes_before_its_count() -> None:
    # Input messages are single events, internal ones up to a thousand: a bound in bytes keeps the memory of both
    # in check without making the input batches small.
    async def run() -> None:
        feed: Feed[bytes] = Feed(100, 10, len)
        feed.put(b"abcd")
        feed.put(b"efgh")
        assert not feed.full() and feed.bytes == 8
        feed.put(b"ij")
        assert feed.full()
        room = asyncio.create_task(feed.wait_room())
        await asyncio.sleep(0)
        assert not room.done()
        assert await feed.take(1) == [b"abcd"]
        await asyncio.wait_for(room, 1)
        assert feed.bytes == 6 and not feed.full()
        feed.clear()
        assert feed.bytes == 0

    asyncio.run(run())
