"""The three stages run as the worker runs them: each partition a queue, read in batches, in a random order.

``LocalFlow`` hands every message on at once, depth first, so a message one stage sends is in the next stage
before anything else happens. On the broker the stages run concurrently: input partitions are fetched unevenly,
each internal partition is read when its consumer gets to it, lead values rerouted between entity partitions
arrive after other partitions' progress, and the processing clock jumps when the broker stalls. This scheduler
picks the next step at random among all of those, so the watermark protocol is exercised in orders the
depth-first flow never produces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from stream.core.events import Kind
from stream.pipeline.cells import CellStage
from stream.pipeline.counts import BatchCounts
from stream.pipeline.entities import EntityStage
from stream.pipeline.ingest import IngestStage, InputMessage
from stream.pipeline.routing import source_name
from stream.pipeline.steps import (
    CELL_TABLE,
    CELLS,
    ENTITIES,
    ENTITY_TABLE,
    cell_step,
    entity_step,
    ingest_step,
    progress_step,
)
from stream.runtime.local import MemoryOutput, run_now
from stream.settings import Settings
from stream.stages import build_stages

KINDS = {kind.value: kind for kind in Kind}


@dataclass(slots=True)
class _Log:
    """One partition of a topic: its messages and the offset of the next one read."""

    messages: list[Any] = field(default_factory=list)
    read: int = 0

    def append(self, message: Any) -> None:
        self.messages.append(message)

    def waiting(self) -> int:
        return len(self.messages) - self.read

    def take(self, most: int) -> list[tuple[int, Any]]:
        taken = [(offset, self.messages[offset]) for offset in range(self.read, min(self.read + most,
                                                                                      len(self.messages)))]
        self.read += len(taken)
        return taken


@dataclass(slots=True)
class ScheduledFlow:
    """Input, entity and cell partitions as queues; :meth:`run` drains them in a random order."""

    settings: Settings
    input_partitions: int
    rand: random.Random
    stall_chance: float = 0.002  # per step: the processing clock jumps as after a broker stall
    clock_ms: int = 0
    counts: BatchCounts = field(default_factory=BatchCounts)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    stalls: int = 0
    ingest: IngestStage = field(init=False)
    entities: EntityStage = field(init=False)
    cells: CellStage = field(init=False)
    _inputs: dict[tuple[str, int], _Log] = field(default_factory=dict)
    _entity_logs: list[_Log] = field(default_factory=list)
    _cell_logs: list[_Log] = field(default_factory=list)
    _entity_table: dict[bytes, bytes] = field(default_factory=dict)
    _cell_table: dict[bytes, bytes] = field(default_factory=dict)
    _next_tick_ms: int = 0

    def __post_init__(self) -> None:
        cfg = self.settings
        self._inputs = {(topic, p): _Log() for topic in cfg.input_topics.values()
                        for p in range(self.input_partitions)}
        stages = build_stages(cfg, dict.fromkeys(cfg.input_topics.values(), self.input_partitions),
                              self._entity_table, self._cell_table)
        self.ingest, self.entities, self.cells = stages.ingest, stages.entities, stages.cells
        self._entity_logs = [_Log() for _ in range(cfg.partitions)]
        self._cell_logs = [_Log() for _ in range(cfg.partitions)]

    def produce(self, topic_kind: str, raw: bytes, partition: int) -> None:
        """Append one message to an input partition (``topic_kind`` as in the contract: 'leads', ...)."""
        kind = KINDS[topic_kind]
        self._inputs[(self.settings.input_topics[kind], partition)].append((kind, raw))

    def _owned(self) -> list[str]:
        return [source_name(topic, p) for topic, p in self._inputs]

    def _advance_clock(self) -> None:
        if self.rand.random() < self.stall_chance:
            self.stall(self.rand.randint(15_000, 40_000))
        else:
            self.clock_ms += self.rand.randint(0, 40)

    def stall(self, duration_ms: int) -> None:
        """The broker stops answering for ``duration_ms``: nothing moves, but the worker's timer goes on."""
        self.clock_ms += duration_ms
        self.stalls += 1
        self._mark_busy()

    def _output(self) -> MemoryOutput:
        """Where a step's results go: messages to an internal topic are appended to their partition's queue."""
        logs = {ENTITIES: self._entity_logs, CELLS: self._cell_logs}
        return MemoryOutput({ENTITY_TABLE: self._entity_table, CELL_TABLE: self._cell_table}, self.records,
                            self.dead_letters, lambda route, partition, value: logs[route][partition].append(value))

    def _busy(self) -> list[str]:
        """What the worker's timer sees from the lag: partitions with messages left, which are not idle."""
        return [source_name(topic, p) for (topic, p), log in self._inputs.items() if log.waiting()]

    def _mark_busy(self) -> None:
        self.ingest.progress.mark_busy(self._busy(), self.clock_ms)

    def _ingest_step(self) -> None:
        """One fetch: a few input partitions, some messages of each, as one ingest batch."""
        ready = [key for key, log in self._inputs.items() if log.waiting()]
        chosen = self.rand.sample(ready, k=self.rand.randint(1, len(ready)))
        batch = []
        for topic, partition in chosen:
            for offset, (kind, raw) in self._inputs[(topic, partition)].take(self.rand.randint(1, 12)):
                batch.append(InputMessage(kind, topic, partition, offset, None, raw))
        out = run_now(ingest_step(self.ingest, batch, self._owned(), self.clock_ms, self.settings.partitions,
                                  self._output()))
        self.counts.merge(out.counts)

    def _tick(self) -> None:
        """The worker's periodic progress report to every entity partition."""
        run_now(progress_step(self.ingest, self._owned(), self._busy(), self.clock_ms, self.settings.partitions,
                              self._output()))

    def _entity_step(self, partition: int) -> None:
        taken = self._entity_logs[partition].take(self.rand.randint(1, 8))
        for out in run_now(entity_step(self.entities, {partition: taken}, self.clock_ms, self._output())):
            self.counts.merge(out.counts)

    def _cell_step(self, partition: int) -> None:
        taken = self._cell_logs[partition].take(self.rand.randint(1, 8))
        for out in run_now(cell_step(self.cells, {partition: taken}, self.clock_ms, self._output())):
            self.counts.merge(out.counts)

    def step(self) -> bool:
        """Run one randomly chosen step; False when nothing waits anywhere."""
        self._advance_clock()
        if self.clock_ms >= self._next_tick_ms:
            self._tick()
            self._next_tick_ms = self.clock_ms + self.settings.watermark_interval_ms
        steps: list[Any] = []
        if any(log.waiting() for log in self._inputs.values()):
            steps.append(self._ingest_step)
        steps += [lambda p=p: self._entity_step(p) for p, log in enumerate(self._entity_logs) if log.waiting()]
        steps += [lambda p=p: self._cell_step(p) for p, log in enumerate(self._cell_logs) if log.waiting()]
        if not steps:
            return False
        self.rand.choice(steps)()
        return True

    def run(self) -> None:
        """Drain every queue, then let the periodic reports settle the last watermarks."""
        while self.step():
            pass
        for _ in range(3):
            self.clock_ms += self.settings.watermark_interval_ms
            self._tick()
            while self.step():
                pass


def queue_all(flow: ScheduledFlow, messages: list[tuple[str, bytes]], seed: int) -> None:
    """Put ``messages`` on the input partitions at random (the message key is never trusted), in order."""
    rand = random.Random(seed)
    for topic_kind, raw in messages:
        flow.produce(topic_kind, raw, rand.randrange(flow.input_partitions))

