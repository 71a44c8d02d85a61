"""The consumer's handling of a message that comes ahead of the next offset expected."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any
from weakref import WeakSet

from faust.types import TP
from intervaltree import IntervalTree

from stream.transport import Consumer

TOPIC = TP("t-entities", 1)


def consumer() -> Consumer:
    """The consumer's gap bookkeeping alone, without a broker or an app."""
    bare = object.__new__(Consumer)
    bare._stale, bare._reseek, bare._jumps = set(), {}, {}
    bare._committed_offset = defaultdict(lambda: None)
    bare._gap = defaultdict(IntervalTree)
    return bare


def test_a_first_jump_reads_the_partition_again_from_the_offset_expected() -> None:
    c = consumer()
    asyncio.run(c._add_gap(TOPIC, 6, 41))
    assert not c._gap[TOPIC]  # nothing is taken as a gap, so nothing is committed past
    assert c._reseek == {TOPIC: 5}  # the last offset read (or the committed one): read again from there
    assert TOPIC in c._stale  # the message that jumped, and those after it, are dropped until then


def test_messages_dropped_until_the_seek_are_no_gap() -> None:
    c = consumer()
    asyncio.run(c._add_gap(TOPIC, 6, 41))
    asyncio.run(c._add_gap(TOPIC, 6, 42))
    assert not c._gap[TOPIC] and c._reseek == {TOPIC: 5}


def test_the_same_jump_after_reading_again_is_a_gap() -> None:
    c = consumer()
    asyncio.run(c._add_gap(TOPIC, 6, 41))
    c._stale.discard(TOPIC)  # what the seek does before the next fetch
    c._reseek.clear()
    asyncio.run(c._add_gap(TOPIC, 6, 41))
    assert sorted((i.begin, i.end) for i in c._gap[TOPIC]) == [(6, 42)]
    assert not c._reseek and TOPIC not in c._stale


def test_another_jump_after_reading_again_is_read_again_too() -> None:
    c = consumer()
    asyncio.run(c._add_gap(TOPIC, 6, 41))
    c._stale.discard(TOPIC)
    c._reseek.clear()
    asyncio.run(c._add_gap(TOPIC, 20, 41))
    assert not c._gap[TOPIC] and c._reseek == {TOPIC: 19}


def acking_consumer() -> Consumer:
    """The consumer's ack bookkeeping alone."""
    bare = consumer()
    bare._acking = False
    bare._acked, bare._acked_index = defaultdict(list), defaultdict(set)
    bare._unacked_messages = WeakSet()
    bare._n_acked = 0
    bare._waiting_for_ack = None
    bare.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    return bare


class _Message:
    def __init__(self, offset: int) -> None:
        self.acked, self.tp, self.offset, self.topic = False, TOPIC, offset, TOPIC.topic


def message(offset: int) -> Any:
    return _Message(offset)


def test_a_message_faust_acks_outside_the_agents_is_not_committed() -> None:
    # Faust acks what its streams skip unprocessed (flow stopped, earlier generation): never safe to commit.
    c, skipped = acking_consumer(), message(7)
    assert c.ack(skipped) is False
    assert not c._acked[TOPIC] and not skipped.acked


def test_a_message_the_agents_ack_is_marked_safe_to_commit() -> None:
    c, handled = acking_consumer(), message(7)
    with c.acking():
        assert c.ack(handled) is True
    assert c._acked[TOPIC] == [7] and handled.acked
    assert c.ack(message(8)) is False  # the block is over
