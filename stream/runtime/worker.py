"""The stages as Faust agents and timers: Faust events in, the stages' steps over ``FaustOutput``, metrics out.

What runs where: each agent is a ``BatchLoop`` (``stream.runtime.batches``) over one of the ``*_batch``
handlers here, which turn Faust events into a stage's input, run its step (``stream.pipeline.steps``) and
record metrics. The timers report input progress (``report_progress``) and consumer lag; the rebalance
signals carry out what ``stream.runtime.rebalance`` answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import orjson
from aiokafka.errors import IllegalStateError
from faust.types import TP

from stream.pipeline.ingest import InputMessage
from stream.pipeline.routing import source_name
from stream.pipeline.steps import CELLS, ENTITIES, cell_step, entity_step, ingest_step, kpi_route, progress_step
from stream.runtime.batches import REVOKE_WAIT_S, BatchLoop, Group, InFlight
from stream.runtime.batching import queued_batches
from stream.runtime.faust_internals import Consumer, agent_queue, note_inbound
from stream.runtime.faust_output import FaustOutput, Routes
from stream.runtime.metrics import Metrics
from stream.runtime.offsets import STALE_HIGHWATER_S, OffsetLedger, Unknown
from stream.runtime.rebalance import Rebalances, Revocation, Step, Topics
from stream.settings import Settings
from stream.stages import Stages

log = logging.getLogger(__name__)


def _by_partition(events: list[faust.EventT[bytes]]) -> dict[int, list[tuple[int, bytes]]]:
    """(offset, value) of each event, per partition, in order: what the entity and cell stages take."""
    grouped: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for event in events:
        grouped[event.message.partition].append((event.message.offset, event.message.value or b""))
    return grouped


@dataclass(slots=True)
class Worker:
    """The stages wired into a Faust app: agents, timers, rebalance handlers."""

    app: faust.App
    settings: Settings
    stages: Stages
    routes: Routes
    inputs: faust.TopicT  # every input topic, read by the ingest agent
    input_kinds: dict[str, Any]  # input topic name -> event kind
    metrics: Metrics
    clock: Callable[[], float]
    in_flight: InFlight = field(default_factory=InFlight)
    rebalances: Rebalances = field(init=False)

    def __post_init__(self) -> None:
        self.rebalances = Rebalances(Topics(frozenset(self.input_kinds), *(
            self.routes.topics[name].get_topic_name() for name in (ENTITIES, CELLS))))

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def ledger(self) -> OffsetLedger:
        return cast(Consumer, self.app.consumer).ledger

    def owned_sources(self) -> list[str]:
        return [source_name(tp.topic, tp.partition) for tp in self.app.consumer.assignment()
                if tp.topic in self.input_kinds]

    # -- the agents ---------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Attach the agents, timers, start-up task and rebalance handlers to the app."""
        app, routes = self.app, self.routes
        for name, topic, handle in (("ingest", self.inputs, self.ingest_batch),
                                    ("entities", routes.topics[ENTITIES], self.entity_batch),
                                    ("cells", routes.topics[CELLS], self.cell_batch)):
            # The stage's name in logs: "a cell batch failed ..."
            app.agent(topic, name=name)(self._agent(handle.__name__.removesuffix("_batch"), handle))
        app.timer(self.settings.watermark_interval_ms / 1000, name="report_progress")(self.report_progress)
        app.timer(5.0, name="measure_lag")(self.measure_lag)
        app.task(self.mark_ready)
        # mode's signal typing wants *args receivers; these take the one positional argument faust sends.
        app.on_partitions_revoked.connect(self.on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self.on_assigned)  # type: ignore[arg-type]
        app.on_rebalance_complete.connect(self.on_rebalance_complete)  # type: ignore[arg-type]

    def _agent(self, name: str, handle: Callable[[list[faust.EventT[bytes]]], Any]) -> Callable[[Any], Any]:
        app = self.app

        def ack(events: list[faust.EventT[bytes]]) -> None:
            """Mark handled events safe to commit (the consumer takes no other acks: see ``Consumer.ack``)."""
            with cast(Consumer, app.consumer).acking():
                for event in events:
                    event.ack()

        group = Group(generation=lambda: app.consumer_generation_id, flowing=app.flow_control.is_active,
                      stopping=lambda: bool(app.should_stop), ack=ack)
        loop = BatchLoop(name, handle, lambda: self.ledger, group, self.in_flight)

        async def run(stream: Any) -> None:  # a faust.Stream, never iterated: its queue is read directly
            await loop.run(self._noted(queued_batches(agent_queue(stream), self.settings.batch_max)))

        return run

    async def _noted(self, batches: AsyncIterator[list[faust.EventT[bytes]]]
                     ) -> AsyncIterator[list[faust.EventT[bytes]]]:
        """Each batch, its partitions noted in Faust's monitor first (``note_inbound``)."""
        async for batch in batches:
            note_inbound(self.app, {event.message.tp for event in batch})
            yield batch

    async def ingest_batch(self, events: list[faust.EventT[bytes]]) -> None:
        started = time.perf_counter()
        messages = [InputMessage(self.input_kinds[e.message.topic], e.message.topic, e.message.partition,
                                 e.message.offset, e.message.key, e.message.value) for e in events]
        out = await ingest_step(self.stages.ingest, messages, self.owned_sources(), self.now_ms(),
                                self.settings.partitions, FaustOutput(self.routes))
        self.metrics.count(out.counts)
        self.metrics.show_last_event_times(out.observed)
        self.metrics.batch_seconds.labels("ingest").observe(time.perf_counter() - started)

    async def entity_batch(self, events: list[faust.EventT[bytes]]) -> None:
        started = time.perf_counter()
        outs = await entity_step(self.stages.entities, _by_partition(events), self.now_ms(), FaustOutput(self.routes))
        for out in outs:
            self.metrics.count(out.counts)
            if out.watermark is not None:
                self.metrics.watermark.labels("entities").set(out.watermark / 1000)
        self.metrics.pending_stage_changes.set(self.stages.entities.pending_count())
        self.metrics.batch_seconds.labels("entities").observe(time.perf_counter() - started)

    async def cell_batch(self, events: list[faust.EventT[bytes]]) -> None:
        started = time.perf_counter()
        outs = await cell_step(self.stages.cells, _by_partition(events), self.now_ms(), FaustOutput(self.routes))
        per_topic: defaultdict[str, int] = defaultdict(int)
        for out in outs:
            for record in out.records:
                per_topic[self.routes.raw_topics[kpi_route(record.family)]] += 1
        for topic, sent in per_topic.items():
            self.metrics.kpi_records.labels(topic).inc(sent)
        for out in outs:
            self.metrics.count(out.counts)
            self.metrics.show_cells(out.touched.items(), self.settings.funnel)
            self.metrics.show_targets(out.targets)
            if out.watermark is not None:
                self.metrics.watermark.labels("cells").set(out.watermark / 1000)
        self.metrics.batch_seconds.labels("cells").observe(time.perf_counter() - started)

    # -- the timers ---------------------------------------------------------------------------------------------

    async def next_to_handle(self, tp: TP, timeout_s: float | None = None) -> int | None:
        """The offset of the next message of ``tp`` the agents have to handle (None while the partition is to be
        read again, or when its position takes over ``timeout_s``).

        Raises:
            AssertionError, IllegalStateError: ``tp`` was revoked by a rebalance (aiokafka raises either).
        """
        known = self.ledger.next_to_handle(tp)
        if known is Unknown.READ_AGAIN:
            return None
        if known is not Unknown.NOT_SOUGHT:
            return known
        try:
            position: int | None = await asyncio.wait_for(self.app.consumer.position(tp), timeout_s)
        except TimeoutError:
            return None
        return position

    async def unread_sources(self) -> list[str]:
        """Owned input partitions with messages the ingest agent has not handled: fetched or not, they are not idle.

        The messages fetched but still queued for the agent (its stream buffer full on a backlog) are past the
        consumer's position, so a partition the agent has handled messages of is judged by the last it handled.
        """
        consumer = cast(Consumer, self.app.consumer)
        unread = []
        for tp in consumer.assignment():
            if tp.topic not in self.input_kinds:
                continue
            try:
                highwater = consumer.highwater(tp)
                age_s = consumer.highwater_age_s(tp)
                next_offset = None if highwater is None else await self.next_to_handle(tp, 1.0)
            except (AssertionError, IllegalStateError):
                continue  # revoked by a rebalance since assignment() was read
            if not self.ledger.caught_up(tp, next_offset, highwater, age_s, STALE_HIGHWATER_S):
                unread.append(source_name(tp.topic, tp.partition))
        return unread

    async def report_progress(self) -> None:
        """Input progress reaches every entity partition even when no event does (idle partitions advance)."""
        owned = self.owned_sources()
        unread = await self.unread_sources() if owned else []
        await progress_step(self.stages.ingest, owned, unread, self.now_ms(), self.settings.partitions,
                            FaustOutput(self.routes))

    async def measure_lag(self) -> None:
        """Consumer lag from the high watermarks of fetch responses and the offsets handed to the agents."""
        lag: dict[str, int] = defaultdict(int)
        internal = {self.routes.topics[name].get_topic_name() for name in (ENTITIES, CELLS)}
        for tp in self.app.consumer.assignment():
            if tp.topic not in self.input_kinds and tp.topic not in internal:
                continue
            try:
                highwater = self.app.consumer.highwater(tp)
                if highwater is None:
                    continue
                next_offset = await self.next_to_handle(tp)
            except (AssertionError, IllegalStateError):
                continue  # revoked by a rebalance since assignment() was read
            if next_offset is not None:  # unknown for the moment (to be read again): left out, not all of it
                lag[tp.topic] += max(highwater - next_offset, 0)
        self.metrics.consumer_lag.clear()
        for topic, messages in lag.items():
            self.metrics.consumer_lag.labels(topic).set(messages)

    async def mark_ready(self) -> None:
        self.metrics.ready.set(1)
        log.info("kpi-stream worker ready: %s", orjson.dumps(self.settings.describe()).decode())

    # -- rebalances ---------------------------------------------------------------------------------------------

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Carry out the revocation's steps, in the order ``stream.runtime.rebalance`` gives them."""
        plan = self.rebalances.revoked(revoked)
        for step in plan.steps:
            await self._revocation_step(step, plan)

    async def _revocation_step(self, step: Step, plan: Revocation) -> None:
        if step is Step.NOT_READY:
            self.metrics.ready.set(0)
            self.metrics.rebalances.inc()
            self.metrics.forget_targets()
        elif step is Step.WAIT_IN_FLIGHT:
            if not await self.in_flight.wait_idle(REVOKE_WAIT_S):
                log.warning("batches still running %.0f s after partitions were revoked; their table writes may "
                            "land after the new owner restored them", REVOKE_WAIT_S)
        elif step is Step.FLUSH_PRODUCER:
            await self.app.producer.flush()  # faust flushed it before this signal: the batches awaited since
        elif step is Step.FORGET_HANDLED:
            self.ledger.forget_handled(plan.handled)
        elif step is Step.FORGET_PROGRESS:
            self.stages.ingest.progress.forget(plan.sources)
        elif step is Step.FORGET_ENTITIES:
            self.stages.entities.forget(plan.entity_partitions)
        elif step is Step.FORGET_CELLS:
            self.stages.cells.forget(plan.cell_partitions)

    async def on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        """Table recovery after a rebalance completed: ready again."""
        self.metrics.ready.set(1)

    def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Tell the stages every partition owned now (each indexes them at its first batch), and the gauges."""
        plan = self.rebalances.assigned(assigned)
        self.stages.entities.assign(plan.entity_partitions)
        self.stages.cells.assign(plan.cell_partitions)
        self.metrics.assigned_partitions.clear()
        for topic, count in plan.per_topic.items():
            self.metrics.assigned_partitions.labels(topic).set(count)
