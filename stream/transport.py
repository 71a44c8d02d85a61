"""Faust's aiokafka transport with a configurable fetch wait and checked changelog ends.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its worker
consumer. On brokers that answer a fetch only when the wait runs out (the
embedded Tansu broker) every hop of the pipeline then costs that long, and a
KPI record trails its event by seconds; a short wait keeps updates within
about a second. It only matters while a topic is idle: a busy fetch returns
as soon as there is data.

Table recovery reads each changelog partition up to the end offset the broker
reports. Tansu under-reports it (measured: 78 reported where 105 records were
there to read), so a restarted worker restored only part of its tables. With
``verify_changelog_end`` the reported ends are checked by reading on from them
with a separate, group-less consumer up to the high watermark its fetch
responses carry (which Tansu reports correctly), and recovery targets the last
record actually there. Apache Kafka reports correct ends: in a run of the whole
test suite on Kafka 4.4 (35 recoveries, 16 of them restoring state) the probe
corrected none. Turned off there, one full run in four hung in the two-worker
test: after the second worker joined, the first restored two changelog
partitions whose one record (end offset 1) never came, "No event received ...
since recovery start" for 2 minutes. Not understood (the probe's two fetch waits
before recovery may let an earlier fetch settle); it stays on by default.

Which of the other workarounds here Apache Kafka needs too: the short fetch
wait bounds each hop's latency on an idle topic on either broker (Kafka answers
a fetch as soon as data arrives, Tansu only when the wait ends); the consumer's
re-read after a seek and after an offset jump (``Consumer``) answer Faust's own
races, not a broker's, and also pass compacted changelogs and transaction
markers (a jump that repeats is accepted): they run on both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import aiokafka
import faust
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP, TransportT
from mode.services import WaitResults
from mode.utils.queues import ThrowableQueue

log = logging.getLogger(__name__)

# Longest the end probe reads before it settles for the ends found so far.
_PROBE_DEADLINE_S = 30.0


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: ClassVar[int] = 1500
    verify_changelog_end: ClassVar[bool] = False

    def highwater_timestamp_ms(self, tp: TP) -> int | None:
        """Wall-clock milliseconds of the last fetch response that carried ``tp`` (aiokafka's record of it)."""
        stamp: int | None = self._ensure_consumer().last_poll_timestamp(tp)
        return stamp

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the fetcher starts, which is after construction.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported: Mapping[TP, int] = await super()._highwaters(partitions)
        if not self.verify_changelog_end or self.consumer.in_transaction or not partitions:
            return reported
        return await self._read_to_end(reported)

    async def _read_to_end(self, reported: Mapping[TP, int]) -> dict[TP, int]:
        """End offsets found by reading on from ``reported`` to the high watermark of the fetch responses."""
        ends = {tp: offset for tp, offset in reported.items() if offset is not None}
        probe = self._probe_consumer()
        await probe.start()
        try:
            probe.assign(list(ends))
            for tp, offset in ends.items():
                probe.seek(tp, offset)
            # Tansu's ListOffsets answers the base offset of the last record batch, plus one; its fetch responses
            # carry the true high watermark. Read until every partition's position has reached that.
            deadline = asyncio.get_running_loop().time() + _PROBE_DEADLINE_S
            while True:
                batch = await probe.getmany(timeout_ms=2 * self.fetch_max_wait_ms)
                for tp, records in batch.items():
                    key = TP(tp.topic, tp.partition)
                    ends[key] = max(ends[key], records[-1].offset + 1)
                behind = [tp for tp in ends
                          if (high := probe.highwater(tp)) is None or await probe.position(tp) < high]
                if not behind:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("changelog end probe: %d of %d partitions not read to their high watermark in "
                                "%.0f s; restoring to the ends found so far", len(behind), len(ends),
                                _PROBE_DEADLINE_S)
                    break
        finally:
            await probe.stop()
        _log_corrections(reported, ends)
        return {**reported, **ends}

    def _probe_consumer(self) -> aiokafka.AIOKafkaConsumer:
        conf = self.app.conf
        transport: Any = self.transport
        return aiokafka.AIOKafkaConsumer(
            client_id=f"{conf.broker_client_id}-end-probe",
            bootstrap_servers=server_list(transport.url, transport.default_port),
            enable_auto_commit=False,
            # A reported end past the real one is out of range: stay there rather than reread the partition.
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            request_timeout_ms=int(conf.broker_request_timeout * 1000.0),
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )


def _log_corrections(reported: Mapping[TP, int], found: Mapping[TP, int]) -> None:
    corrected = sorted((tp, reported[tp], end) for tp, end in found.items() if end != reported[tp])
    for tp, was, end in corrected:
        log.info("changelog %s[%d]: broker reported end offset %d, records run to %d", tp.topic, tp.partition, was, end)


class _ReadOffsets(defaultdict[TP, int | None]):
    """Faust's per-partition read offsets, left alone while a partition's fetched messages are dropped."""

    def __init__(self, stale: set[TP]) -> None:
        super().__init__(lambda: None)
        self._stale = stale

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        if tp not in self._stale:
            super().__setitem__(tp, offset)


class Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, made to deliver every message of a stream partition after a rebalance.

    Recovery resumes the stream partitions *before* it seeks them to their committed offsets, and the batch
    being delivered when the seek lands goes on from the old position. Faust then takes the first later
    message as a gap and drops the refetched messages below it (they are under its read offset), and those it
    had not delivered because the flow was suspended are lost: on Tansu a restarted worker lost whole
    envelopes that way (measured in the SIGKILL test). Here a stream partition's messages are dropped from
    its assignment until the first fetch after the seek, which starts again at the committed offset. Any
    other message that comes ahead of the next offset expected has its partition read again from there (see
    ``_in_order``).
    """

    thread_class: ClassVar[type[_ConsumerThread]] = _ConsumerThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stale: set[TP] = set()  # stream partitions assigned and not yet fetched again after the seek
        self._reseek: dict[TP, int] = {}
        self._jumps: dict[TP, tuple[int, int]] = {}  # the jump a partition was read again for, per partition
        self._next: dict[TP, int] = {}  # per stream partition, the offset to deliver next (from the last seek on)
        self._acking = False
        self._read_offset = _ReadOffsets(self._stale)
        # The last offset handed to the streams, per partition: what an agent has still to take from its queue.
        self.delivered: dict[TP, int] = {}
        deliver = self.callback

        async def on_message(message: Any) -> None:
            if await self._in_order(message.tp, message.offset):
                self.delivered[message.tp] = message.offset
                if self._delivers_at_once(message.tp):
                    await deliver(message)
                else:
                    await super(Consumer, self).wait_first(deliver(message), self.suspend_flow.wait())

        self.callback = on_message
        self._on_message_code = on_message.__code__

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Faust's message loop races every message's delivery against the flow being suspended; this runs it
        without the race, which ``on_message`` keeps for the deliveries that can wait.

        The race costs four tasks and an ``asyncio.wait`` per message (about a sixth of the worker's samples on
        a backlog, in one profile). It matters only when a delivery can wait: for a full stream queue, or while
        the flow is suspended. Then, at a rebalance, an agent no longer takes from its queue, and the loop must
        not stay blocked, since table recovery reads the changelogs through it.
        """
        if len(coros) == 2 and getattr(coros[0], "cr_code", None) is self._on_message_code:
            getattr(coros[1], "close", lambda: None)()  # the suspend wait, never started
            await coros[0]
            return WaitResults([coros[0]], [None], False)
        return await super().wait_first(*coros, timeout=timeout)

    def _delivers_at_once(self, tp: TP) -> bool:
        """Whether handing over a message of ``tp`` goes through at once: the flow runs and none of the queues
        it goes to is full (nothing else of the hand-over can wait on the agents)."""
        channels = cast(Conductor, self.app.topics)._tp_index.get(tp)  # what faust's conductor delivers it to
        if not channels or not self.app.flow_control.is_active():
            return False
        return not any(channel.queue.full() for channel in channels)

    async def _in_order(self, tp: TP, offset: int) -> bool:
        """Whether to hand the message at ``offset`` to the streams: not while its partition is to be read again,
        nor when it comes ahead of the offset expected next; then the partition is read again from there, once.

        Faust's own check compares an offset with its read offset, which is the committed offset right after a
        seek (the next to read) but the last offset read afterwards (one less): a message missing right after a
        seek is no gap to it, and it commits past the message once the next is acked. Here the next offset is
        tracked exactly from each seek, and any jump is read again. A jump that repeats from there is a real gap
        (offsets compacted away, transaction markers), which faust may commit past.
        """
        if tp in self._stale:
            return False  # fetched before the seek that reads it again
        expected = self._next.get(tp)
        if expected is None:
            return True  # a changelog partition, which recovery seeks on its own
        if self.app.rebalancing:
            # At the end of a rebalance faust resumes and seeks the stream partitions, then resumes the flow,
            # which empties the streams' queues: a message handed over in between is lost, and faust's read
            # offset has moved past it (measured in the scale-out test: the first message after a rebalance,
            # delivered 1 ms before "Worker ready", never reached its agent). Read again once the flow runs.
            log.info("consumer: %s[%d] delivered offset %d before the rebalance ended; reading again from %d",
                     tp.topic, tp.partition, offset, min(offset, expected))
            self._stale.add(tp)
            self._reseek[tp] = min(offset, expected)
            return False
        if offset > expected:
            if self._jumps.pop(tp, None) != (expected, offset):
                log.info("consumer: %s[%d] delivered offset %d where %d was next; reading again from there",
                         tp.topic, tp.partition, offset, expected)
                self._jumps[tp] = (expected, offset)
                self._stale.add(tp)
                self._reseek[tp] = expected
                return False
            log.warning("consumer: offsets %d..%d of %s[%d] are not there after reading again; taken as a gap",
                        expected, offset - 1, tp.topic, tp.partition)
            await super()._add_gap(tp, expected, offset)
        if offset >= expected:
            self._next[tp] = offset + 1
        return True

    def to_read_again(self, tp: TP) -> bool:
        """Whether messages of ``tp`` fetched since the last seek are dropped, to be read again: the consumer's
        position is then past messages the streams never got."""
        return tp in self._stale

    def next_offset(self, tp: TP) -> int | None:
        """The offset the streams get next from stream partition ``tp``, once sought (None before); meaningful
        only while it is not to be read again (see ``to_read_again``)."""
        return self._next.get(tp)

    @contextmanager
    def acking(self) -> Iterator[None]:
        """The block in which the agents ack the events they have handled: the only acks that count."""
        self._acking = True
        try:
            yield
        finally:
            self._acking = False

    def ack(self, message: Any) -> bool:
        """Mark a message safe to commit, if an agent handled it (see ``acking``).

        Faust also acks the messages its streams skip unprocessed: those taken from a queue while the flow is
        stopped (a rebalance, or the worker stopping) or fetched in an earlier generation of the group, and
        their offsets could then be committed with nobody having processed them. Refused here, they are read
        again from the committed offset by whoever owns the partition next.
        """
        if not self._acking:
            return False
        acked: bool = super().ack(message)
        return acked

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._stale.update(tp for tp in assigned if not self._is_changelog_tp(tp))
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._stale.difference_update(revoked)
        for tp in revoked:
            self.delivered.pop(tp, None)
            self._reseek.pop(tp, None)
            self._jumps.pop(tp, None)
            self._next.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        for tp in self.assignment():
            if not self._is_changelog_tp(tp):
                # No committed offset: the reset policy (earliest) applies, and a log that starts later is a gap.
                self._next[tp] = self._read_offset.get(tp) or 0
                if tp in self._stale:
                    self._reseek[tp] = self._next[tp]

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        if self._reseek:
            partitions, self._reseek = self._reseek, {}
            self._stale.difference_update(partitions)
            self._next.update(partitions)
            await self.seek_wait(partitions)
        async for item in super().getmany(timeout):
            yield item

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's gap detection, superseded by ``_in_order`` (which registers the real gaps)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)

    def highwater_age_s(self, tp: TP) -> float | None:
        """Seconds since a fetch response last carried ``tp``'s high watermark (None: never)."""
        stamp = cast(_ConsumerThread, self._thread).highwater_timestamp_ms(tp)
        return None if stamp is None else max(0.0, time.time() - stamp / 1000)


def _value_size(item: Any) -> int:
    """Bytes of the message an event in a stream queue was decoded from (0 for anything else)."""
    value = getattr(getattr(item, "message", None), "value", None)
    return len(value) if isinstance(value, bytes | bytearray | memoryview) else 0


class ByteBoundQueue(ThrowableQueue[Any]):
    """Faust's stream queue, full at ``maxsize`` messages or at ``max_bytes`` of message values, whichever
    comes first.

    A count alone bounds memory poorly: input messages are a few hundred bytes, the internal messages carry up
    to 256 KiB of events each, so 256 of those wait as 64 MiB in one agent's queue on a backlog. The bytes
    drive the same flow control as the count: at 1/1.25 of either bound the partition stops being fetched,
    and it is fetched again once the queue is down to 0.4 of both. A single message larger than ``max_bytes``
    still gets in when the queue is empty.
    """

    def __init__(self, *args: Any, max_bytes: int, **kwargs: Any) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._bytes_high = max_bytes / self.pressure_high_ratio
        self._bytes_drop = max_bytes * self.pressure_drop_ratio
        super().__init__(*args, **kwargs)

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.bytes += _value_size(item)

    def _get(self) -> Any:
        item = super()._get()
        self.bytes -= _value_size(item)
        return item

    def clear(self) -> None:
        super().clear()
        self.bytes = 0

    def full(self) -> bool:
        return super().full() or (self.bytes >= self.max_bytes and self.qsize() > 0)

    def in_pressure_high_state(self, callback: Any) -> bool:
        pending = self._pending_pressure_drop_callbacks
        if callback not in pending and (self.qsize() >= self.pressure_high_size or self.bytes >= self._bytes_high):
            pending.add(callback)
            self.on_pressure_high()
            return True
        return False

    def maybe_endorse_pressure_drop(self) -> None:
        pending = self._pending_pressure_drop_callbacks
        if not pending:
            return
        if not self.qsize():
            for callback in pending:
                callback()
            pending.clear()
            self.on_pressure_drop()
        elif self.qsize() <= self.pressure_drop_size and self.bytes <= self._bytes_drop:
            pending.pop()()
            self.on_pressure_drop()


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's producer, idempotent also outside transactions (Faust turns idempotence on only with them).

    A send whose answer the broker never gave (a stall, a leader change while waiting for ``acks=all``) is sent
    again; without sequence numbers the broker writes it twice. On Apache Kafka 4.4 a worker logged
    NOT_LEADER retries of its sends to the internal topics after a 20 s SIGSTOP of the broker (the resumed
    node fences itself and its partitions get new leader epochs). Tansu refuses idempotent producers.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class KpiApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch, and whose stream queues hold
    at most ``stream_buffer_bytes`` of messages besides Faust's bound in messages (``ByteBoundQueue``).

    With ``verify_changelog_end`` table recovery reads to the last changelog record actually there rather
    than to the end offset the broker reports. With ``idempotent_producer`` the producer is idempotent.
    """

    def __init__(
        self, *args: Any, fetch_max_wait_ms: int = 1500, verify_changelog_end: bool = False,
        stream_buffer_bytes: int = 1 << 20, idempotent_producer: bool = True, **kwargs: Any
    ) -> None:
        self.stream_buffer_bytes = stream_buffer_bytes
        thread = type(
            "ConsumerThread",
            (_ConsumerThread,),
            {"fetch_max_wait_ms": fetch_max_wait_ms, "verify_changelog_end": verify_changelog_end},
        )
        consumer = type("Consumer", (Consumer,), {"thread_class": thread})
        producer = IdempotentProducer if idempotent_producer else faust_aiokafka.Producer
        self._transport_class = type("Transport", (faust_aiokafka.Transport,),
                                     {"Consumer": consumer, "Producer": producer})
        super().__init__(*args, **kwargs)

    def FlowControlQueue(self, maxsize: int | None = None, *, clear_on_resume: bool = False) -> ThrowableQueue[Any]:
        return ByteBoundQueue(maxsize=maxsize, max_bytes=self.stream_buffer_bytes, flow_control=self.flow_control,
                              clear_on_resume=clear_on_resume)

    def _new_transport(self) -> TransportT:
        transport: TransportT = self._transport_class(self.conf.broker_consumer, self, loop=self.loop)
        return transport
