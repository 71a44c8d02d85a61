"""Every use of Faust's, mode's and aiokafka's private or undocumented names, in one module.

This is the adapter between the worker and faust-streaming: a consumer that feeds the offsets ledger
(``stream.runtime.offsets``) and gates acks, its fetching thread, stream queues bounded in bytes, an idempotent
producer, the app that puts them together, and a worker process without the spinner that stops in time. Each
private name relied on is listed in ``PRIVATE_NAMES`` below with why, and
``tests/runtime/test_faust_internals.py`` checks that each is still there, and that the installed versions are
the ones they were checked with (``CHECKED_WITH``): upgrading faust-streaming, mode-streaming or aiokafka fails
that test until this list has been checked again. No other module of ``stream/`` uses such a name.

The fetch wait. faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its worker
consumer. On brokers that answer a fetch only when the wait runs out (the
embedded Tansu broker) every hop of the pipeline then costs that long, and a
KPI record trails its event by seconds; a short wait keeps updates within
about a second. It only matters while a topic is idle: a busy fetch returns
as soon as there is data.

Changelog ends. Table recovery reads each changelog partition up to the end offset the broker
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
re-read after a seek and after an offset jump (the ledger's rules) answer Faust's own
races, not a broker's: they run on both.

Input read committed. The worker consumer reads ``read_committed`` (Faust does only
under its transactions), so records of aborted upstream transactions are never
counted. The offsets the fetcher skips (transaction markers, aborted and compacted
records) are no jump to read again for: each fetch's positions before and after it
(``_fetch_records``) tell the ledger what its records leave out, and a partition
whose last record is a marker is caught up once its fetch has been handed over.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import aiokafka
import faust
from aiokafka.errors import KafkaConnectionError, KafkaError
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.transport.producer import ProducerBuffer
from faust.types import TP, TransportT
from mode.services import WaitResults
from mode.utils.queues import ThrowableQueue

from stream.runtime.offsets import Admission, OffsetLedger

log = logging.getLogger(__name__)

# The versions the names below were checked with; the test fails when an installed version differs.
CHECKED_WITH = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

# (owner, name, why): every private or undocumented name of those packages this module relies on. The owner is
# "module:Class"; the name is a class attribute or method, or an attribute its instances set (``self.name``).
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_create_worker_consumer",
     "overridden: the worker consumer's fetch wait is set on the consumer it returns"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_highwaters",
     "overridden: recovery's changelog ends, checked by reading on"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_ensure_consumer",
     "the aiokafka consumer, for the time of a partition's last fetch response"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_fetch_max_wait_ms",
     "read when the fetcher starts, after construction: the only way to set the worker consumer's wait"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_isolation_level",
     "read when the fetcher starts: read_committed without Faust's transactions"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_fetch_records",
     "extended: the fetch positions before and after, from the thread that fetches"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_subscription", "the partitions' fetch positions, read at once"),
    ("faust.transport.consumer:ThreadDelegateConsumer", "_getmany", "extended: the ledger learns each fetch"),
    ("faust.transport.consumer:Consumer", "_read_offset", "replaced: left alone while a partition is re-read"),
    ("faust.transport.consumer:Consumer", "callback", "wrapped: each fetched message is admitted by the ledger"),
    ("faust.transport.consumer:Consumer", "suspend_flow", "the event a hand-over that can wait races against"),
    ("faust.transport.consumer:Consumer", "_is_changelog_tp", "changelog partitions are not the ledger's"),
    ("faust.transport.consumer:Consumer", "_add_gap", "superseded; called for the gaps the ledger finds"),
    ("faust.transport.consumer:Consumer", "_gap", "where _add_gap files gaps (read by the tests)"),
    ("faust.transport.consumer:Consumer", "_committed_offset", "read by _add_gap (set up by the tests)"),
    ("faust.transport.consumer:ThreadDelegateConsumer", "_new_consumer_thread",
     "overridden: the thread class of this module"),
    ("faust.transport.consumer:ThreadDelegateConsumer", "_thread", "the consumer thread, for fetch times"),
    ("faust.transport.consumer:Consumer", "perform_seek", "extended: the ledger learns each seek"),
    ("faust.transport.consumer:Consumer", "seek_wait", "seeks the partitions the ledger re-reads"),
    ("mode.services:Service", "wait_first", "overridden: Faust's per-message race, run only when it matters"),
    ("faust.transport.conductor:Conductor", "_tp_index", "the channels a partition's messages go to"),
    ("faust.transport.conductor:Conductor", "_tp_to_callback_lock",
     "held while the conductor rebuilds its callbacks: no message is put at once meanwhile"),
    ("faust.transport.conductor:ConductorCompiler", "build",
     "what Consumer._put_at_once does for raw channels (decode, create_event, incref, put_nowait_enhanced)"),
    ("faust.transport.producer:ProducerBuffer", "pending", "the unthreaded producer buffer, for its ebb"),
    ("faust.transport.producer:ProducerBuffer", "queue", "the threaded producer buffer, for its ebb"),
    ("faust.transport.producer:ProducerBuffer", "max_messages", "the buffer's bound the conductor waits below"),
    ("faust.types.tuples:Message", "incref", "one reference per channel the message is put to"),
    ("faust.serializers.schemas:Schema", "key_serializer", "raw channels' events are their messages' bytes"),
    ("faust.serializers.schemas:Schema", "value_serializer", "raw channels' events are their messages' bytes"),
    ("faust.app.base:App", "rebalancing", "a message handed over during a rebalance is lost"),
    ("faust.app.base:App", "_new_transport", "overridden: the transport with this module's classes"),
    ("faust.app.base:App", "FlowControlQueue", "overridden: stream queues bounded in bytes"),
    ("mode.utils.queues:FlowControlQueue", "_pending_pressure_drop_callbacks", "the byte bound drives them"),
    ("mode.utils.queues:FlowControlQueue", "in_pressure_high_state", "overridden: high at either bound"),
    ("mode.utils.queues:FlowControlQueue", "maybe_endorse_pressure_drop", "overridden: dropped at both bounds"),
    ("mode.utils.queues:FlowControlQueue", "pressure_high_ratio", "the bytes use the count's ratios"),
    ("mode.utils.queues:FlowControlQueue", "pressure_drop_ratio", "the bytes use the count's ratios"),
    ("asyncio.queues:Queue", "_put", "extended: counts the bytes of what is put"),
    ("asyncio.queues:Queue", "_get", "extended: counts the bytes of what is taken"),
    ("faust.transport.drivers.aiokafka:Producer", "_settings_extra", "extended: acks=all and idempotence"),
    ("faust.worker:Worker", "_setup_spinner_handler", "overridden: no spinner (it sets the root logger to DEBUG)"),
    ("faust.worker:Worker", "_schedule_shutdown", "extended: a deadline for stopping"),
    ("mode.worker:Worker", "_signal_stop_time", "set once the first stop signal came"),
    ("mode.worker:Worker", "stop_and_shutdown",
     "extended: a refused idempotent producer is told once the worker has stopped, then it exits"),
    ("faust.sensors.monitor:Monitor", "stream_inbound_time",
     "noted per batch for the livelock check, as the stream iterator the agents no longer use did"),
    ("faust.streams:Stream", "channel", "the agent's channel, whose queue the agents sweep (agent_queue)"),
    ("faust.channels:Channel", "queue", "the agent's queue the conductor fills, swept without the stream iterator"),
    ("faust.agents.actor:Actor", "cancel",
     "throws StopAsyncIteration into the agent's channel queue: how the swept batches learn that the agent stops "
     "(the test reads it in the source)"),
)

def agent_queue(stream: Any) -> Any:
    """The queue of an agent's stream, which the conductor fills and ``Actor.cancel`` throws
    ``StopAsyncIteration`` into when the agent stops (``stream.runtime.batching.queued_batches`` sweeps it)."""
    return stream.channel.queue


# Longest the end probe reads before it settles for the ends found so far.
_PROBE_DEADLINE_S = 30.0


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # Set by ``KpiApp`` from the settings on a subclass, declared here without a value of their own.
    fetch_max_wait_ms: ClassVar[int]
    verify_changelog_end: ClassVar[bool]

    def highwater_timestamp_ms(self, tp: TP) -> int | None:
        """Wall-clock milliseconds of the last fetch response that carried ``tp`` (aiokafka's record of it)."""
        stamp: int | None = self._ensure_consumer().last_poll_timestamp(tp)
        return stamp

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads these when the fetcher starts, which is after construction.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        # Faust reads read_committed only with its transactions: records of aborted upstream transactions (Kafka
        # Connect's exactly-once sources, Debezium, Flink's or Kafka Streams' exactly-once sinks) were counted.
        consumer._isolation_level = "read_committed"
        return consumer

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: Any,
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        """Faust's fetch, with each active partition's fetch position before and after it noted for the consumer
        (``take_fetch_positions``): what lies between them and is not among the records was skipped by the
        fetcher (transaction markers, aborted transactions, compacted records)."""
        before = _positions(consumer, active_partitions)
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        # Read with no await since the records were taken: the positions are the ones they leave.
        self._fetch_positions = (before, _positions(consumer, active_partitions))
        return records

    def take_fetch_positions(self) -> tuple[dict[TP, int], dict[TP, int]]:
        """The positions before and after the last fetch (empty once taken, or when it fetched nothing)."""
        positions: tuple[dict[TP, int], dict[TP, int]] = getattr(self, "_fetch_positions", ({}, {}))
        self._fetch_positions = ({}, {})
        return positions

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


def _positions(consumer: aiokafka.AIOKafkaConsumer, partitions: Iterable[Any]) -> dict[TP, int]:
    """The fetch position of each of ``partitions`` that is assigned and has one, read without waiting."""
    subscriptions = consumer._subscription
    positions: dict[TP, int] = {}
    if subscriptions.subscription is None:
        return positions
    assignment = subscriptions.subscription.assignment
    for tp in partitions or ():
        state = assignment.state_value(tp) if subscriptions.is_assigned(tp) else None
        if state is not None and state.has_valid_position:
            positions[TP(tp.topic, tp.partition)] = state.position
    return positions


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
    """Faust's consumer, made to deliver every message of a stream partition after a rebalance: an adapter that
    feeds the offsets ledger (``stream.runtime.offsets``) and does what it says.

    The ledger decides; this class only reports to it what Faust does (assignments, seeks, revocations, each
    fetched message) and carries out its answers: drop a message, seek a partition again before the next fetch,
    register a gap. It also gates acks (``acking``) and hands messages over without Faust's per-message race
    when nothing can make the hand-over wait (``wait_first``).
    """

    thread_class: ClassVar[type[_ConsumerThread]] = _ConsumerThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ledger = OffsetLedger()
        self._fetch_round: dict[TP, int] = {}
        self._acking = False
        self._read_offset = _ReadOffsets(cast(set[TP], self.ledger.stale))
        deliver = self.callback

        async def on_message(message: Any) -> None:
            if await self._admit(message.tp, message.offset) and not self._put_at_once(message):
                if self._delivers_at_once(message.tp):
                    await deliver(message)
                else:
                    await super(Consumer, self).wait_first(deliver(message), self.suspend_flow.wait())

        self.callback = on_message
        self._on_message_code = on_message.__code__
        self._raw_channels: dict[Any, bool] = {}  # a channel -> whether its events are its messages' bytes
        self._pressure: dict[TP, tuple[Callable[[], None], Callable[[], None]]] = {}
        self._event_class: Any = None
        self._producer_threaded: bool | None = None

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

    def _put_at_once(self, message: Any) -> bool:
        """Put the message's event into its agents' queues here, as Faust's conductor would, when nothing of the
        hand-over can wait and every channel takes the message's bytes as they are; False: Faust's way, untouched.

        Faust's conductor decodes each message through its channel's schema (for raw bytes: the message's key and
        value unchanged), makes the event through the app's settings, and awaits the flow control, the producer
        buffer's ebb and a lock per message: about a fifth of the worker's CPU on a backlog, in one profile. This
        does the same in a plain call, and leaves to Faust every case where one of those could wait: the flow
        suspended (a rebalance), the conductor's callbacks being rebuilt (its lock held), the producer's buffer
        over its bound, a full queue, or a channel with a schema of its own.
        """
        tp = message.tp
        conductor = cast(Conductor, self.app.topics)
        if (not self._delivers_at_once(tp) or conductor._tp_to_callback_lock.locked()
                or self._producer_backlogged()):
            return False
        channels = conductor._tp_index[tp]
        if not all(self._takes_raw_bytes(channel) for channel in channels):
            return False
        if self._event_class is None:
            self._event_class = self.app.conf.Event
        event = self._event_class(self.app, message.key, message.value, message.headers, message)
        message.incref(len(channels))
        on_high, on_drop = self._pressure_callbacks(tp)
        for channel in channels:
            channel.queue.put_nowait_enhanced(event, on_pressure_high=on_high, on_pressure_drop=on_drop)
        return True

    def _takes_raw_bytes(self, channel: Any) -> bool:
        """Whether the channel's events carry its messages' key and value as they are (raw bytes both)."""
        known = self._raw_channels.get(channel)
        if known is None:
            schema = getattr(channel, "schema", None)
            known = self._raw_channels[channel] = (
                schema is not None and schema.key_type is bytes and schema.value_type is bytes
                and schema.key_serializer == "raw" and schema.value_serializer == "raw")
        return known

    def _pressure_callbacks(self, tp: TP) -> tuple[Callable[[], None], Callable[[], None]]:
        """What Faust's conductor tells when a queue of ``tp`` is under high pressure and when that drops."""
        callbacks = self._pressure.get(tp)
        if callbacks is None:
            on_full = self.app.sensors.on_topic_buffer_full
            # A message's ``tp`` is aiokafka's TopicPartition; Faust keeps its own TP in the partition sets.
            faust_tp = TP(tp.topic, tp.partition)

            def on_high() -> None:
                on_full(faust_tp)
                self.on_buffer_full(faust_tp)

            def on_drop() -> None:
                self.on_buffer_drop(faust_tp)

            callbacks = self._pressure[tp] = (on_high, on_drop)
        return callbacks

    def _producer_backlogged(self) -> bool:
        """Whether Faust's producer buffer is over its bound (its conductor then waits for it to ebb)."""
        buffer = cast(ProducerBuffer, self.app.producer.buffer)
        if self._producer_threaded is None:
            self._producer_threaded = bool(self.app.conf.producer_threaded)
        pending = buffer.queue if self._producer_threaded else buffer.pending
        return pending is not None and pending.qsize() > buffer.max_messages

    def _delivers_at_once(self, tp: TP) -> bool:
        """Whether handing over a message of ``tp`` goes through at once: the flow runs and none of the queues
        it goes to is full (nothing else of the hand-over can wait on the agents)."""
        channels = cast(Conductor, self.app.topics)._tp_index.get(tp)  # what faust's conductor delivers it to
        if not channels or not self.app.flow_control.is_active():
            return False
        return not any(channel.queue.full() for channel in channels)

    async def _admit(self, tp: TP, offset: int) -> bool:
        """Whether to hand the message at ``offset`` to the streams, as the ledger says; a gap it finds is
        registered with Faust, which may then commit past it."""
        admission, expected = self.ledger.admit(tp, offset, self.app.rebalancing)
        if admission is Admission.DELIVER_PAST_GAP:
            # Faust's gap runs to its second offset included: the message delivered is not part of it.
            await super()._add_gap(tp, expected, offset - 1)
        return admission is not Admission.DROP

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
        self.ledger.assigned(tp for tp in assigned if not self._is_changelog_tp(tp))
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.ledger.revoked(revoked)
        await super().on_partitions_revoked(revoked)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        for tp in self.assignment():
            if not self._is_changelog_tp(tp):
                # No committed offset: the reset policy (earliest) applies, and a log that starts later is a gap.
                self.ledger.sought(tp, self._read_offset.get(tp) or 0)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        records = await super()._getmany(active_partitions, timeout)
        before, after = cast(_ConsumerThread, self._thread).take_fetch_positions()
        for tp, start in before.items():
            if tp in after and not self._is_changelog_tp(tp):
                self.ledger.fetched(tp, start, after[tp])
                self._fetch_round[tp] = len(records.get(tp, ()))
        return records

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """Faust's messages, each fetch's skipped offsets passed over once all its messages were handed over."""
        if self.ledger.reseek:
            await self.seek_wait(cast(dict[TP, int], self.ledger.take_reseeks()))
        self._fetch_round = {}  # filled by _getmany: messages fetched per partition
        handed_over: defaultdict[TP, int] = defaultdict(int)
        async for tp, message in super().getmany(timeout):
            handed_over[tp] += 1
            yield tp, message
        # Here only when Faust handed every message over (it stops early at a rebalance or a stop): a partition
        # whose messages all went on is known to its fetch's end, markers and aborted records after them included.
        for tp, fetched in self._fetch_round.items():
            if handed_over[tp] == fetched and (skipped := self.ledger.fetched_through(tp)) is not None:
                await super()._add_gap(tp, skipped[0], skipped[1] - 1)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's gap detection, superseded by the ledger's (``_admit`` registers the real gaps)."""

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


def note_inbound(app: Any, tps: Iterable[TP]) -> None:
    """Note in Faust's monitor that events of ``tps`` reached an agent now.

    Faust's livelock check ("Stream has not started processing", "Stream stopped processing") reads this note,
    which its stream iterator makes for every event; the agents take their batches from the queues directly.
    """
    inbound = app.monitor.stream_inbound_time
    now = time.monotonic()
    for tp in tps:
        inbound[tp] = now


class IdempotenceRefused(RuntimeError):
    """The broker refused the idempotent producer; the message names the setting that turns it off."""


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's producer, idempotent also outside transactions (Faust turns idempotence on only with them).

    A send whose answer the broker never gave (a stall, a leader change while waiting for ``acks=all``) is sent
    again; without sequence numbers the broker writes it twice. On Apache Kafka 4.4 a worker logged
    NOT_LEADER retries of its sends to the internal topics after a 20 s SIGSTOP of the broker (the resumed
    node fences itself and its partitions get new leader epochs). Tansu refuses idempotent producers, and so
    may old or restricted clusters: the worker then stops, naming KPI_IDEMPOTENT_PRODUCER (``QuietWorker``).
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}

    async def on_start(self) -> None:
        """Start as Faust's producer does.

        Raises:
            IdempotenceRefused: the broker refused to give the producer an id, which idempotence needs.
        """
        try:
            await super().on_start()
        except KafkaConnectionError:
            raise  # no broker answered: nothing was said about idempotence
        except KafkaError as exc:
            # aiokafka's start bootstraps (failing only with KafkaConnectionError), then asks for a producer id
            # and raises the error the broker answered: UNKNOWN_SERVER_ERROR from Tansu, CLUSTER_AUTHORIZATION_FAILED
            # from a Kafka before 3.0 without the IDEMPOTENT_WRITE ACL; IncompatibleBrokerVersion when the broker
            # has no such request.
            raise IdempotenceRefused(
                f"the broker refused an idempotent producer ({exc}): set KPI_IDEMPOTENT_PRODUCER=false to run on "
                "it (a send retried after a lost answer may then be written twice), or let the cluster accept "
                "idempotent producers") from exc


class KpiApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch, and whose stream queues hold
    at most ``stream_buffer_bytes`` of messages besides Faust's bound in messages (``ByteBoundQueue``).

    With ``verify_changelog_end`` table recovery reads to the last changelog record actually there rather
    than to the end offset the broker reports. With ``idempotent_producer`` the producer is idempotent.
    ``local_state_max_age_ms`` is the oldest local table state the disk store reuses.
    """

    def __init__(
        self, *args: Any, fetch_max_wait_ms: int, verify_changelog_end: bool, stream_buffer_bytes: int,
        idempotent_producer: bool, local_state_max_age_ms: int, **kwargs: Any
    ) -> None:
        # No defaults: each is a setting (``stream.settings``), whose default is declared there alone.
        self.stream_buffer_bytes = stream_buffer_bytes
        self.local_state_max_age_ms = local_state_max_age_ms  # read by the disk store (stream.state.disk)
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


# Exit status of a worker that did not finish stopping within KPI_STOP_TIMEOUT (Kafka unreachable): a
# temporary failure, as for a SIGKILL the input it had not committed is read again after a restart.
EXIT_STOP_TIMED_OUT = 75
# Exit status of a worker whose settings the cluster refuses (an idempotent producer): sysexits' EX_CONFIG, as
# restarting it unchanged cannot help.
EXIT_SETTING_REFUSED = 78


class QuietWorker(faust.Worker):
    """A worker without the progress spinner, which turns the root logger to DEBUG on a backlog, that stops
    within ``stop_timeout_s`` of a signal, and that ends with one line saying so when the broker refuses its
    idempotent producer."""

    stop_timeout_s: ClassVar[float] = 30.0
    refused: IdempotenceRefused | None = None

    async def start(self) -> None:
        try:
            await super().start()
        except IdempotenceRefused as refused:
            # Not raised on: mode logs what a start raises with its traceback, then the stop's own lines, and
            # the reason would be lost in between. Told last instead (stop_and_shutdown), the services that
            # had started stopped as after any failed start.
            self.refused = refused

    def stop_and_shutdown(self) -> None:
        super().stop_and_shutdown()
        if self.refused is not None:
            log.critical("%s", self.refused)
            raise SystemExit(EXIT_SETTING_REFUSED)

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        # Faust's stop flushes the producer, which waits for every pending send: with Kafka gone it waited for
        # good (measured: still running 90 s after SIGTERM, at "Flush producer buffer"). Stopping is what the
        # signal asked for, and nothing is lost by it: unacked input is read again, as after a SIGKILL.
        if not self._signal_stop_time:
            deadline = threading.Timer(self.stop_timeout_s, _stop_timed_out, (self.stop_timeout_s,))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(sig)


def _stop_timed_out(timeout_s: float) -> None:
    log.critical("the worker did not stop within %.0f s (KPI_STOP_TIMEOUT), most likely because Kafka cannot be "
                 "reached to deliver its last sends; exiting with status %d, and a restart reads the input it had "
                 "not committed again", timeout_s, EXIT_STOP_TIMED_OUT)
    logging.shutdown()
    os._exit(EXIT_STOP_TIMED_OUT)
