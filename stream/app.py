"""The Faust app: three agents driving the pipeline stages, their tables, the timer, and ``/metrics``.

input topics --ingest--> <app>-entities --entities--> <app>-cells --cells--> kpi-* topics
                   \\--> kpi-dead-letters <--/
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import faust
import orjson
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from stream.batching import ready_batches
from stream.core.kpis import FAMILIES
from stream.core.validation import Validator
from stream.kafka import MAX_REQUEST_BYTES, faust_credentials, internal_topic
from stream.metrics import Metrics
from stream.pipeline.cells import CellStage
from stream.pipeline.entities import EntityStage
from stream.pipeline.ingest import IngestStage, InputMessage, encode_envelope, encode_envelopes
from stream.pipeline.routing import source_name
from stream.settings import Settings
from stream.stages import cell_config, entity_config
from stream.store import DiskStore, MemoryStore
from stream.transport import Consumer, KpiApp

log = logging.getLogger(__name__)

# Exit status of a worker stopped because a batch failed in a way no input explains (a defect, or a resource
# gone): a supervisor restarts it, and the batch is read again from the committed offsets.
EXIT_BATCH_FAILED = 70
# A high watermark older than this is not trusted to say a partition is caught up. Each fetch response carries
# the high watermark of every partition fetched (aiokafka uses no fetch sessions), every KPI_FETCH_MAX_WAIT
# (100 ms) on an idle topic, so a fresh one is never older than that plus a busy event loop's delay. Added for
# the broker-stall test on Apache Kafka 4.4 (20 s SIGSTOP, more input sent as it resumes; the node fences
# itself and unfences within 60 ms, its partitions getting new leader epochs), where 2 of the first 7 runs had
# page views dead-lettered as late (8 in one, with the attribution keys they fed wrong). Since: 0 of 9 runs
# with this check, but also 0 of 8 without it (with a logging probe of the progress reports), so it is not
# shown to be the fix; the cause is not found. A check that can only hold the watermark back longer cannot
# make a result wrong.
STALE_HIGHWATER_S = 2.0
# A batch that fails with one of these failed for a missing ACL: the worker says so as its last line.
AUTHORIZATION_ERRORS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError,
                        TransactionalIdAuthorizationFailed)


def _fail_stop(stage: str) -> None:
    """Stop the process now, as a SIGKILL would, after logging why.

    Faust's answer to an agent that raises is to start the agent again on the events after the failed batch.
    Those are processed and acked while the failed batch's are not, and its events come back only after the
    next restart, maybe behind windows the watermark closed meanwhile: they would be late. Stopping at once
    leaves everything from the failed batch on to be read again, which the stages treat as replays (the crash
    tests kill workers at any point). The error is logged with its traceback first.
    """
    log.critical("a %s batch failed with an error no input explains; stopping the worker (exit status %d) so "
                 "that a restart reads it again from the committed offsets", stage, EXIT_BATCH_FAILED,
                 exc_info=True)
    error = sys.exc_info()[1]
    if isinstance(error, AUTHORIZATION_ERRORS):
        # The last line then says what the login lacks, not only which request the broker refused.
        log.critical("the broker refused this worker's login: %s; the worker needs every ACL that `kpi-stream acls` "
                     "lists", error)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


# Loggers that write whole message values at DEBUG. Input payloads may hold personal data (e-mail addresses,
# names), so these never log below INFO, whatever KPI_LOG_LEVEL says.
PAYLOAD_LOGGERS = ("faust.topics", "faust.transport.drivers.aiokafka", "aiokafka.producer.producer")


# Exit status of a worker that did not finish stopping within KPI_STOP_TIMEOUT (Kafka unreachable): a
# temporary failure, as for a SIGKILL the input it had not committed is read again after a restart.
EXIT_STOP_TIMED_OUT = 75


class QuietWorker(faust.Worker):
    """A worker without the progress spinner, which turns the root logger to DEBUG on a backlog, that stops
    within ``stop_timeout_s`` of a signal."""

    stop_timeout_s: ClassVar[float] = 30.0

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


@dataclass(slots=True)
class OffsetGuard:
    """Skips events at or below the last offset this process handled on their partition.

    After an unclean restart, faust can resume fetching before it seeks back to
    the committed offset, handing the same records over twice in one process.
    """

    last: dict[TP, int] = field(default_factory=dict)

    def fresh(self, events: list[faust.EventT[bytes]]) -> list[faust.EventT[bytes]]:
        """The events not handled yet, in order."""
        kept = []
        for event in events:
            tp = event.message.tp
            if event.message.offset > self.last.get(tp, -1):
                self.last[tp] = event.message.offset
                kept.append(event)
        return kept

    def forget(self, tps: set[TP]) -> None:
        """Revoked partitions start over from their committed offset when they come back."""
        for tp in tps:
            self.last.pop(tp, None)


def _by_partition(events: list[faust.EventT[bytes]]) -> dict[int, list[tuple[int, bytes]]]:
    """(offset, value) of each event, per partition, in order: what the entity and cell stages take."""
    grouped: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for event in events:
        grouped[event.message.partition].append((event.message.offset, event.message.value or b""))
    return grouped


# What a Kafka producer's send takes: topic, key, value, partition, timestamp, headers; it returns a future.
Send = Callable[[str, bytes, bytes | None, int | None, int | None, Any], Awaitable[Awaitable[Any]]]


async def _write(table: faust.Table[bytes, bytes], partition: int, writes: dict[bytes, bytes | None], send: Send
                 ) -> list[Awaitable[Any]]:
    """Apply a batch's writes to ``table`` and send them to its changelog partition; the sends, to be awaited.

    Faust's own table writes go through its producer buffer, and it commits input offsets without waiting for
    them, so a worker killed between the two keeps the offset and loses the state. Sent here directly, each
    write has a future the agent waits for before it acks the batch. ``send`` is the app's producer (under
    ``exactly_once`` its transaction manager), not the changelog topic's ``send``, which wraps every record in
    a message, a future and a callback of its own (3.7 % of the worker's samples on a backlog, in one profile), the
    callback to record the offset for stores that persist it, which the two allowed (memory://, disk://) do not.

    Each key's partition is noted as table recovery notes it, so that the store drops the key once this worker
    no longer owns the partition. Faust notes it only for keys it restores: the keys a worker writes would
    stay in its memory after a rebalance took their partition away, and come back stale if it got the
    partition again after the changelog had been compacted.
    """
    sent: list[Awaitable[Any]] = []
    store = cast("MemoryStore | DiskStore", table.data)  # the two stores settings allow
    topic = table.changelog_topic.get_topic_name()
    for key, value in writes.items():
        if value is not None:
            store.put(key, value, partition)
        elif not store.delete(key):
            continue
        sent.append(await send(topic, key, value, partition, None, None))
    return sent


# Longest a rebalance waits for running batches (well inside the broker's rebalance timeout).
REVOKE_WAIT_S = 30.0


class InFlight:
    """Counts agent batches between being taken and being acked, so a rebalance can wait for them.

    A batch still running when partitions are revoked would write its table updates after the revocation:
    into the changelog after the new owner (or this worker, re-reading what it keeps) restored the table from
    it. Waiting for such batches before giving partitions up keeps every write ahead of every restore.
    """

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Mark one batch as running for the duration of the block."""
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no batch runs; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


async def _delivered(sends: list[Awaitable[Any]]) -> None:
    """Wait until every send is delivered.

    A stop cancels the wait but never the sends themselves: faust completes a send's future when the broker
    answers, and a future cancelled under it makes faust's producer fail at shutdown.
    """
    if sends:
        await asyncio.shield(asyncio.gather(*sends))


def current_events(events: list[faust.EventT[bytes]], generation: int | None, flowing: bool
                   ) -> list[faust.EventT[bytes]]:
    """The events of a batch fetched in the consumer group's current generation, while events flow.

    A batch is collected before the agent sees it, so a rebalance can come between the two: faust clears the
    agents' queues when partitions are revoked, but not the batch being collected. Its events would then be
    processed after the revocation, while the partitions' new owner (or this worker, recovering the tables
    again) rebuilds their state from the changelogs: the stale batch would write state the recovery
    overwrites or interleaves with, and send cell deltas at positions the cell stage then takes as already
    applied when the new owner sends the correct ones. Left unacked, these events are read again from the
    committed offsets by whoever owns their partitions now. ``flowing`` is false from the revocation until
    the new assignment, when the generation changes, and once the worker stops.
    """
    if not flowing:
        return []
    return [event for event in events if event.message.generation_id == generation]


def _ack(app: faust.App, events: list[faust.EventT[bytes]]) -> None:
    """Mark handled events safe to commit (the consumer takes no other acks: see ``Consumer.ack``)."""
    with cast(Consumer, app.consumer).acking():
        for event in events:
            event.ack()


def build_app(settings: Settings, input_partitions: dict[str, int], registry: CollectorRegistry | None = None,
              clock: Callable[[], float] = time.time) -> faust.App:
    """Create the app with its agents, tables, timer and web page.

    Args:
        settings: the service settings.
        input_partitions: partition count of each input topic (the watermark waits for all of them).
        registry: where metrics are registered (a new one by default).
        clock: processing-time clock in seconds, injected for tests.
    """
    registry = registry or CollectorRegistry()
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    metrics = Metrics.create(registry, settings.campaign_labels, settings.campaign_label_limit)
    ready = Gauge("leadgen_worker_ready", "1 once the worker has recovered its state and processes events.",
                  registry=registry)

    def now_ms() -> int:
        return int(clock() * 1000)

    app = KpiApp(
        settings.app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        verify_changelog_end=settings.verify_changelog_end,
        idempotent_producer=settings.idempotent_producer,
        stream_buffer_bytes=settings.stream_buffer_bytes,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="partitioned://" if settings.store == "memory://" else settings.store,  # stream.store.MemoryStore
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee=settings.processing_guarantee,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.005,  # faust's default of 0 sends tiny batches
        producer_max_request_size=MAX_REQUEST_BYTES,
        table_standby_replicas=0,
        # A batch cut short by shutdown was not acked, so it is processed again after the restart; results are
        # idempotent, so there is no need to wait for in-flight events (which hangs when an agent failed).
        stream_wait_empty=False,
        stream_buffer_maxsize=settings.stream_buffer,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        Worker=type("QuietWorker", (QuietWorker,), {"stop_timeout_s": settings.stop_timeout_ms / 1000}),
    )
    n = settings.partitions
    kind_of = {topic: kind for kind, topic in settings.input_topics.items()}
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                           "value_serializer": "raw"}
    inputs = app.topic(*settings.input_topics.values(), **raw)
    entities_topic = app.topic(internal_topic(settings, "entities"), partitions=n, **raw)
    cells_topic = app.topic(internal_topic(settings, "cells"), partitions=n, **raw)
    dead_letters = app.topic(settings.topic_dead_letters, **raw)
    kpi_topic_names = {family: settings.kpi_topic(family) for family in FAMILIES}
    table: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "partitions": n}
    entity_table = cast(faust.Table[bytes, bytes], app.Table("entity-state", **table))
    cell_table = cast(faust.Table[bytes, bytes], app.Table("cells", **table))

    ingest_stage = IngestStage(Validator(settings.rates, settings.max_event_bytes), n,
                               settings.idle_partition_timeout_ms, settings.max_future_skew_ms)
    sources = frozenset(source_name(topic, p) for topic in settings.input_topics.values()
                        for p in range(input_partitions[topic]))
    entity_stage = EntityStage(entity_config(settings, sources), entity_table)
    cell_stage = CellStage(cell_config(settings), cell_table)
    in_flight = InFlight()
    guards = {"ingest": OffsetGuard(), "entities": OffsetGuard(), "cells": OffsetGuard()}

    def owned_sources() -> list[str]:
        return [source_name(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in kind_of]

    async def send_dead_letters(records: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        return [await dead_letters.send(key=key.encode(), value=orjson.dumps(record)) for key, record in records]

    def agent(handle: Callable[[list[faust.EventT[bytes]]], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """An agent that hands ``handle`` batches of events and acks them once it returns.

        A batch that raises stops the worker (``_fail_stop``), unless the worker is already stopping: then
        the error comes from the producer or consumer going away, and the batch, left unacked, is read again
        after the restart anyway.
        """
        stage = handle.__name__.removesuffix("_batch")

        async def run(stream: Any) -> None:  # a faust.Stream
            events_in = stream.noack()  # acked by ``_ack`` once the batch is handled
            queue = events_in.channel.queue  # what the stream's iterator reads from
            async for taken in ready_batches(events_in.events(), lambda: not queue.empty(), settings.batch_max):
                events = current_events(taken, app.consumer_generation_id, app.flow_control.is_active())
                if len(events) < len(taken):
                    log.info("%d of %d events of a batch were fetched before partitions were revoked (rebalance "
                             "or stop): left unprocessed, to be read again from the committed offsets",
                             len(taken) - len(events), len(taken))
                if not events:
                    continue
                async with in_flight.batch():
                    try:
                        await handle(events)
                    except Exception:
                        if app.should_stop:
                            raise
                        _fail_stop(stage)
                    _ack(app, events)  # only after success: a failed batch is processed again after a restart

        return run

    async def ingest_batch(events: list[faust.EventT[bytes]]) -> None:
        started = time.perf_counter()
        fresh = guards["ingest"].fresh(events)
        messages = [InputMessage(kind_of[e.message.topic], e.message.topic, e.message.partition,
                                 e.message.offset, e.message.key, e.message.value) for e in fresh]
        now = now_ms()
        out = ingest_stage.process(messages, now)
        # Every entity partition gets the progress this batch makes, with the batch's events for it: once the
        # batch is acked its input offsets can be committed, and a next owner of those input partitions may find
        # nothing more there to report progress from. The shared progress that the timer reports moves on only
        # after the events are delivered, so no report gets ahead of them.
        report = ingest_stage.progress.report_after(out.observed, owned_sources(), now)
        pending = [await entities_topic.send(value=envelope, partition=partition)
                   for partition in range(n) for envelope in encode_envelopes(out.envelopes.get(partition, []), report)]
        pending += await send_dead_letters(out.dead_letters)
        await _delivered(pending)  # before the batch is acked and its input offsets can be committed
        ingest_stage.commit_progress(out, now)
        metrics.count(out.counts)
        for source, ts in out.observed:
            metrics.last_event_time.labels(source.rsplit(":", 1)[0]).set(ts / 1000)
        metrics.batch_seconds.labels("ingest").observe(time.perf_counter() - started)

    async def entity_batch(events: list[faust.EventT[bytes]]) -> None:
        # The partitions of a batch are processed first and their outputs delivered together: each partition's
        # cell deltas still reach the broker before its state is persisted, but with two round trips per batch
        # rather than two per partition.
        started = time.perf_counter()
        outs = [(partition, entity_stage.process(partition, group, now_ms()))
                for partition, group in _by_partition(guards["entities"].fresh(events)).items()]
        pending: list[Awaitable[Any]] = []
        for _, out in outs:
            pending += [await cells_topic.send(value=envelope, partition=target)
                        for target, envelopes in out.envelopes.items() for envelope in envelopes]
            pending += [await entities_topic.send(value=envelope, partition=target)
                        for target, envelope in out.reroutes.items()]
            pending += await send_dead_letters(out.dead_letters)
        await _delivered(pending)  # before the state that produced them is persisted
        written: list[Awaitable[Any]] = []
        send = (await app.maybe_start_producer()).send
        for partition, out in outs:
            written += await _write(entity_table, partition, out.writes, send)
        await _delivered(written)
        for _, out in outs:
            metrics.count(out.counts)
            if out.watermark is not None:
                metrics.watermark.labels("entities").set(out.watermark / 1000)
        metrics.pending_stage_changes.set(entity_stage.pending_count())
        metrics.batch_seconds.labels("entities").observe(time.perf_counter() - started)

    async def cell_batch(events: list[faust.EventT[bytes]]) -> None:
        started = time.perf_counter()
        outs = [(partition, cell_stage.process(partition, group, now_ms()))
                for partition, group in _by_partition(guards["cells"].fresh(events)).items()]
        # State first, then the records derived from it (see CellStage), for all of the batch's partitions at once.
        written: list[Awaitable[Any]] = []
        # Straight to the producer: faust's ``Topic.send`` wraps each record in its own message, future and
        # callback objects, which was 9 % of the worker's time at 2,000 events/s. The producer is the one
        # ``Topic.send`` would use: under ``exactly_once`` faust's transaction manager, so records stay in the
        # transaction of their partition.
        send = (await app.maybe_start_producer()).send
        for partition, out in outs:
            written += await _write(cell_table, partition, out.writes, send)
        await _delivered(written)
        pending: list[Awaitable[Any]] = []
        per_topic: defaultdict[str, int] = defaultdict(int)
        for _, out in outs:
            for record in out.records:
                topic = kpi_topic_names[record.family]
                pending.append(await send(topic, record.key.encode(), orjson.dumps(record.record), None, None, None))
                per_topic[topic] += 1
        await _delivered(pending)
        for topic, sent in per_topic.items():
            metrics.kpi_records.labels(topic).inc(sent)
        for _, out in outs:
            metrics.count(out.counts)
            metrics.show_cells(out.touched.items(), settings.funnel)
            if out.watermark is not None:
                metrics.watermark.labels("cells").set(out.watermark / 1000)
        metrics.batch_seconds.labels("cells").observe(time.perf_counter() - started)

    app.agent(inputs, name="ingest")(agent(ingest_batch))
    app.agent(entities_topic, name="entities")(agent(entity_batch))
    app.agent(cells_topic, name="cells")(agent(cell_batch))

    async def next_to_handle(tp: TP, guard: OffsetGuard, timeout_s: float | None = None) -> int | None:
        """The offset of the next message of ``tp`` the agent behind ``guard`` has to handle: one past the last it
        handled, or before it has handled any the next the consumer delivers (None while the partition is to be
        read again, or when its position takes over ``timeout_s``).

        Raises:
            AssertionError, IllegalStateError: ``tp`` was revoked by a rebalance (aiokafka raises either).
        """
        if tp in guard.last:
            return guard.last[tp] + 1
        consumer = cast(Consumer, app.consumer)
        if consumer.to_read_again(tp):
            return None
        known = consumer.next_offset(tp)
        if known is not None:
            return known
        try:
            position: int | None = await asyncio.wait_for(app.consumer.position(tp), timeout_s)
        except TimeoutError:
            return None
        return position

    async def unread_sources() -> list[str]:
        """Owned input partitions with messages the ingest agent has not handled: fetched or not, they are not idle.

        Unknown counts as unread: a partition not fetched yet, or whose position cannot be had at once. The
        messages fetched but still queued for the agent (its stream buffer full on a backlog) are past the
        consumer's position, so a partition the agent has handled messages of is judged by the last it handled.
        """
        consumer = cast(Consumer, app.consumer)
        guard = guards["ingest"]
        unread = []
        for tp in consumer.assignment():
            if tp.topic not in kind_of:
                continue
            try:
                highwater = consumer.highwater(tp)
                age_s = consumer.highwater_age_s(tp)
                next_offset = None if highwater is None else await next_to_handle(tp, guard, 1.0)
            except (AssertionError, IllegalStateError):
                continue  # revoked by a rebalance since assignment() was read
            if (highwater is None or next_offset is None or next_offset < highwater
                    or age_s is None or age_s > STALE_HIGHWATER_S
                    or consumer.delivered.get(tp, -1) > guard.last.get(tp, -1)):
                unread.append(source_name(tp.topic, tp.partition))
        return unread

    async def report_progress() -> None:
        """Input progress reaches every entity partition even when no event does (idle partitions advance)."""
        owned = owned_sources()
        if not owned:
            return
        ingest_stage.progress.mark_busy(await unread_sources(), now_ms())
        envelope = encode_envelope([], ingest_stage.progress.report(owned, now_ms()))
        for partition in range(n):
            await entities_topic.send(value=envelope, partition=partition)

    app.timer(settings.watermark_interval_ms / 1000, name="report_progress")(report_progress)

    agent_topics = {"ingest": set(kind_of), "entities": {entities_topic.get_topic_name()},
                    "cells": {cells_topic.get_topic_name()}}

    async def measure_lag() -> None:
        """Consumer lag from the high watermarks of fetch responses and the offsets handed to the agents."""
        lag: dict[str, int] = defaultdict(int)
        for agent, guard in guards.items():
            for tp in app.consumer.assignment():
                if tp.topic not in agent_topics[agent]:
                    continue
                try:
                    highwater = app.consumer.highwater(tp)
                    if highwater is None:
                        continue
                    next_offset = await next_to_handle(tp, guard)
                except (AssertionError, IllegalStateError):
                    continue  # revoked by a rebalance since assignment() was read
                if next_offset is not None:  # unknown for the moment (to be read again): left out, not all of it
                    lag[tp.topic] += max(highwater - next_offset, 0)
        metrics.consumer_lag.clear()
        for topic, messages in lag.items():
            metrics.consumer_lag.labels(topic).set(messages)

    app.timer(5.0, name="measure_lag")(measure_lag)

    async def mark_ready() -> None:
        ready.set(1)
        log.info("kpi-stream worker ready: %s", orjson.dumps(settings.describe()).decode())

    app.task(mark_ready)

    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        metrics.rebalances.inc()
        # Batches taken before the revocation finish and their table writes reach the changelogs before any
        # partition changes hands (see InFlight); faust flushed the producer before this signal, so again.
        if not await in_flight.wait_idle(REVOKE_WAIT_S):
            log.warning("batches still running %.0f s after partitions were revoked; their table writes may "
                        "land after the new owner restored them", REVOKE_WAIT_S)
        await app.producer.flush()
        for guard in guards.values():
            guard.forget(revoked)
        ingest_stage.progress.forget(source_name(tp.topic, tp.partition) for tp in revoked)
        entity_stage.forget(tp.partition for tp in revoked if tp.topic == entities_topic.get_topic_name())
        cell_stage.forget(tp.partition for tp in revoked if tp.topic == cells_topic.get_topic_name())

    def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        metrics.assigned_partitions.clear()
        counts: dict[str, int] = defaultdict(int)
        for tp in assigned:
            counts[tp.topic] += 1
        for topic, count in counts.items():
            metrics.assigned_partitions.labels(topic).set(count)

    # mode's signal typing wants *args receivers; these take the one positional argument faust sends.
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    async def metrics_page(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return self.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.page("/metrics")(metrics_page)
    return app
