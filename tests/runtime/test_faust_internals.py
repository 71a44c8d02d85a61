"""The Faust adapter: the consumer's gap registration, ack gate and hand-over, and the byte-bound queues."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import re
import tomllib
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from weakref import WeakSet

import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

from stream.runtime.faust_internals import CHECKED_WITH, PRIVATE_NAMES, ByteBoundQueue, Consumer, KpiApp
from stream.runtime.offsets import OffsetLedger

TOPIC = TP("t-entities", 1)


def consumer(next_offset: int | None = 6) -> Consumer:
    """The consumer's gap bookkeeping alone, without a broker or an app, as a seek to ``next_offset`` left it."""
    bare = object.__new__(Consumer)
    bare.ledger = OffsetLedger()
    if next_offset is not None:
        bare.ledger.sought(TOPIC, next_offset)
    bare._committed_offset = defaultdict(lambda: None)
    bare._gap = defaultdict(IntervalTree)
    bare.app = SimpleNamespace(rebalancing=False)
    return bare


def test_a_gap_the_ledger_finds_is_registered_with_faust() -> None:
    # Faust may commit past a registered gap: only a jump seen again after reading again is one.
    c = consumer()
    assert asyncio.run(c._admit(TOPIC, 41)) is False
    assert not c._gap[TOPIC]
    c.ledger.take_reseeks()
    assert asyncio.run(c._admit(TOPIC, 41)) is True
    assert sorted((i.begin, i.end) for i in c._gap[TOPIC]) == [(6, 41)]  # 6..40: the message at 41 is no gap


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


def _flow(active: bool, *full: bool) -> SimpleNamespace:
    """An app whose flow runs or not, with one channel per queue (full or not) subscribed to ``TOPIC``."""
    channels = [SimpleNamespace(queue=SimpleNamespace(full=lambda full=each: full)) for each in full]
    return SimpleNamespace(topics=SimpleNamespace(_tp_index={TOPIC: channels} if full else {}),
                           flow_control=SimpleNamespace(is_active=lambda: active))


@pytest.mark.parametrize(("app", "at_once"), [
    (_flow(True, False), True),
    (_flow(True, False, False), True),
    (_flow(True, False, True), False),  # one of its queues is full: the hand-over waits for that agent
    (_flow(False, False), False),  # flow suspended (a rebalance): the hand-over waits for it to resume
    (_flow(True), False),  # nothing known to subscribe: not judged, faust's own way
])
def test_a_message_is_handed_over_at_once_only_when_nothing_can_make_it_wait(app: Any, at_once: bool) -> None:
    c = consumer()
    c.app = app
    assert c._delivers_at_once(TOPIC) is at_once


def test_faust_s_race_for_the_message_callback_runs_the_callback_alone() -> None:
    # Faust's loop calls ``wait_first(callback(message), suspend_flow.wait())`` for every message; the race's
    # four tasks were about a sixth of the worker's time. The callback decides itself when to race.
    ran: list[str] = []

    async def callback() -> None:
        ran.append("callback")

    async def suspend_wait() -> None:
        ran.append("suspend wait")

    async def scenario() -> Any:
        c = consumer()
        c._on_message_code = callback.__code__
        tasks_before = len(asyncio.all_tasks())
        other = suspend_wait()
        result = await c.wait_first(callback(), other)
        assert len(asyncio.all_tasks()) == tasks_before and other.cr_frame is None  # closed, never started
        return result

    result = asyncio.run(scenario())
    assert ran == ["callback"] and not result.stopped and result.results == [None]


def event(size: int) -> Any:
    """A stream event as the queues hold them: only its message's value counts."""
    return SimpleNamespace(message=SimpleNamespace(value=b"x" * size))


def queue(maxsize: int = 256, max_bytes: int = 1000) -> ByteBoundQueue:
    flowing = FlowControlEvent(initially_suspended=False)
    return ByteBoundQueue(maxsize=maxsize, max_bytes=max_bytes, flow_control=flowing)


def test_a_queue_is_full_at_its_bytes_before_its_count() -> None:
    q = queue()
    for _ in range(2):
        q.put_nowait(event(400))
    assert not q.full() and q.bytes == 800
    q.put_nowait(event(400))
    assert q.full() and q.qsize() == 3
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(event(1))
    q.get_nowait()
    assert not q.full() and q.bytes == 800


def test_a_queue_is_full_at_its_count_before_its_bytes() -> None:
    q = queue(maxsize=2)
    q.put_nowait(event(1))
    q.put_nowait(event(1))
    assert q.full() and q.bytes == 2


def test_a_message_larger_than_the_bound_gets_into_an_empty_queue() -> None:
    q = queue()
    assert not q.full()
    q.put_nowait(event(5000))
    assert q.full()
    q.get_nowait()
    assert not q.full() and q.bytes == 0


def test_items_without_a_message_count_no_bytes() -> None:
    q = queue()
    q.put_nowait(object())
    assert q.bytes == 0 and q.qsize() == 1


def test_clearing_a_queue_forgets_its_bytes() -> None:
    q = queue()
    q.put_nowait(event(900))
    q.clear()
    assert q.bytes == 0 and q.empty()


def test_a_put_into_a_queue_full_of_bytes_waits_for_room() -> None:
    async def scenario() -> list[str]:
        q = queue()
        q.put_nowait(event(1000))
        done: list[str] = []

        async def put() -> None:
            await q.put(event(10))
            done.append("put")

        task = asyncio.ensure_future(put())
        await asyncio.sleep(0.01)
        done.append("waited")
        q.get_nowait()
        await asyncio.wait_for(task, 1)
        return done

    assert asyncio.run(scenario()) == ["waited", "put"]


def test_bytes_stop_a_partition_being_fetched_and_resume_it_once_down() -> None:
    """Faust's conductor calls ``put_nowait_enhanced``: the partition stops being fetched at 1/1.25 of the bound
    and is fetched again once the queue is down to 0.4 of it (here 800 and 400 bytes)."""
    q = queue()
    calls: list[str] = []

    def put(size: int) -> bool:
        return q.put_nowait_enhanced(event(size), on_pressure_high=lambda: calls.append("high"),
                                     on_pressure_drop=on_pressure_drop)

    def on_pressure_drop() -> None:
        calls.append("drop")

    assert [put(300), put(300), put(200)] == [False, False, False]
    assert put(100) is True and calls == ["high"]  # 800 bytes before this put
    q.get_nowait()  # 600 left
    assert calls == ["high"]
    q.get_nowait()  # 300 left, 2 messages: down to 0.4 of the bytes
    assert calls == ["high"]  # checked on the next get
    q.get_nowait()
    assert calls == ["high", "drop"]


def test_the_app_s_stream_queues_are_bound_in_bytes() -> None:
    app = KpiApp("bytes-bound-test", fetch_max_wait_ms=100, verify_changelog_end=True, stream_buffer_bytes=4096,
                 idempotent_producer=True, local_state_max_age_ms=3_600_000, stream_buffer_maxsize=7)
    q = app.topic("bytes-bound-test-input").queue  # what the conductor puts an agent's events into
    assert isinstance(q, ByteBoundQueue) and q.max_bytes == 4096 and q.maxsize == 7


def _owner(dotted: str) -> type:
    module, _, name = dotted.partition(":")
    owner: type = getattr(importlib.import_module(module), name)
    return owner


def _sets_attribute(owner: type, name: str) -> bool:
    """Whether ``owner`` or a class it inherits from assigns ``self.<name>`` in its source."""
    pattern = re.compile(rf"self\.{re.escape(name)}\b\s*(:[^=\n]*)?=[^=]")
    for cls in owner.__mro__:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


@pytest.mark.parametrize(("owner", "name", "why"), PRIVATE_NAMES,
                         ids=[f"{owner.split(':')[1]}.{name}" for owner, name, _ in PRIVATE_NAMES])
def test_every_private_name_relied_on_is_still_there(owner: str, name: str, why: str) -> None:
    cls = _owner(owner)
    assert hasattr(cls, name) or _sets_attribute(cls, name), f"{owner} has no {name} any more ({why})"


@pytest.mark.parametrize("package", sorted(CHECKED_WITH))
def test_the_private_names_were_checked_with_the_installed_versions(package: str) -> None:
    # Upgrading one of these packages: check PRIVATE_NAMES against the new version, then update CHECKED_WITH.
    assert importlib.metadata.version(package) == CHECKED_WITH[package]


def test_the_checked_versions_are_the_pinned_ones() -> None:
    pins = dict(line.split("==") for line in tomllib.loads(
        (Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"] if "==" in line)
    assert {package: pins.get(package) for package in CHECKED_WITH} == CHECKED_WITH


def test_a_stopping_agent_ends_its_queue_with_stop_async_iteration() -> None:
    # What the swept batches rely on to end (stream.runtime.batching): Faust throws it into the channel's queue.
    from faust.agents.actor import Actor

    source = inspect.getsource(Actor.cancel)
    assert "channel" in source and "_throw(StopAsyncIteration())" in source


def test_no_other_module_uses_a_private_name_of_faust_mode_or_aiokafka() -> None:
    # Names listed in PRIVATE_NAMES, used outside the one module allowed to.
    stream = Path(__file__).parents[2] / "stream"
    private = {name for _, name, _ in PRIVATE_NAMES if name.startswith("_")}
    found = []
    for path in stream.rglob("*.py"):
        if path.name == "faust_internals.py":
            continue
        text = path.read_text()
        found += [f"{path.relative_to(stream)}: {name}" for name in private if re.search(rf"\.{name}\b", text)]
    assert found == []


def _raw_app(maxsize: int = 8) -> tuple[Any, Any, Consumer]:
    """A real app with one raw-bytes topic subscribed on ``TOPIC``, and a bare consumer of it."""
    app = KpiApp("put-at-once-test", fetch_max_wait_ms=100, verify_changelog_end=True, stream_buffer_bytes=1 << 20,
                 idempotent_producer=True, local_state_max_age_ms=3_600_000, stream_buffer_maxsize=maxsize)
    topic = app.topic(TOPIC.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    app.topics._tp_index[TOPIC] = {topic}
    app.flow_control.resume()
    c = consumer()
    c.app = app
    c._raw_channels, c._pressure, c._event_class, c._producer_threaded = {}, {}, None, None
    c._active_partitions, c._buffered_partitions = {TOPIC}, set()  # what the pressure callbacks move
    return app, topic, c


def _faust_message(offset: int, key: bytes | None = b"k", value: bytes | None = b'{"v": 1}') -> Any:
    from faust.types.tuples import Message
    return Message(TOPIC.topic, TOPIC.partition, offset, 1_700_000_000.0, 0, [("h", b"1")], key, value, None)


@pytest.mark.parametrize(("key", "value"), [(b"k", b'{"v": 1}'), (None, b"x"), (b"k", None), (None, None)])
def test_an_event_put_at_once_is_the_one_faust_s_conductor_makes(key: bytes | None, value: bytes | None) -> None:
    app, topic, c = _raw_app()
    ours, theirs = _faust_message(5, key, value), _faust_message(5, key, value)
    assert c._put_at_once(ours) is True
    put = topic.queue.get_nowait()
    made = asyncio.run(topic.decode(theirs, propagate=True))  # what Faust's conductor puts
    assert type(put) is type(made)
    assert (put.key, put.value, put.headers, put.app) == (made.key, made.value, made.headers, made.app)
    assert put.message is ours and ours.refcount == 1  # one reference per channel, as Faust's incref gives


def test_nothing_that_could_wait_is_put_at_once() -> None:
    app, topic, c = _raw_app(maxsize=2)
    app.flow_control.suspend()
    assert c._put_at_once(_faust_message(1)) is False  # a rebalance: Faust's way, which waits for the flow
    app.flow_control.resume()
    assert c._put_at_once(_faust_message(1)) is True
    assert c._put_at_once(_faust_message(2)) is True
    assert c._put_at_once(_faust_message(3)) is False  # the queue is full
    topic.queue.get_nowait(), topic.queue.get_nowait()
    for _ in range(app.producer.buffer.max_messages + 1):
        app.producer.buffer.pending.put_nowait(object())
    assert c._put_at_once(_faust_message(3)) is False  # the producer's buffer must ebb first
    app.producer.buffer.pending = asyncio.Queue()
    assert c._put_at_once(_faust_message(3)) is True


def test_the_pressure_callbacks_pause_and_resume_fetching_the_partition_as_faust_s_do() -> None:
    app, _, c = _raw_app()
    fetched_tp = TopicPartition(TOPIC.topic, TOPIC.partition)  # what a fetched message carries
    on_high, on_drop = c._pressure_callbacks(fetched_tp)
    on_high()
    assert c._buffered_partitions == {TOPIC} and not c._active_partitions
    on_drop()
    assert c._active_partitions == {TOPIC} and not c._buffered_partitions
    assert all(type(tp) is TP for tp in c._get_active_partitions())  # Faust asserts it
    assert c._pressure_callbacks(fetched_tp) == (on_high, on_drop)  # made once per partition


def test_a_channel_with_a_schema_of_its_own_is_left_to_faust() -> None:
    app, _, c = _raw_app()
    decoded = app.topic("json-topic", value_type=dict, value_serializer="json")
    app.topics._tp_index[TOPIC] = {decoded}
    assert c._put_at_once(_faust_message(1)) is False
    assert decoded.queue.empty()


def test_no_message_is_put_at_once_while_the_conductor_rebuilds_its_callbacks() -> None:
    app, topic, c = _raw_app()

    async def scenario() -> bool:
        async with app.topics._tp_to_callback_lock:
            return c._put_at_once(_faust_message(1))

    assert asyncio.run(scenario()) is False and topic.queue.empty()
