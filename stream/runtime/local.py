"""The whole dataflow in one process with dicts for tables: for tests and for reasoning, no broker needed.

It runs the same three stage objects and the same steps (``stream.pipeline.steps``) as the Faust agents, over
an output that keeps tables in dicts and hands each message sent to an internal topic to its stage as soon as
the step that sent it is over, depth first; it keeps the last KPI record per key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from stream.core.events import Kind
from stream.pipeline.cells import CellStage
from stream.pipeline.counts import BatchCounts
from stream.pipeline.entities import EntityStage
from stream.pipeline.ingest import IngestStage, InputMessage
from stream.pipeline.routing import source_name
from stream.pipeline.state import apply_writes
from stream.pipeline.steps import (
    CELL_TABLE,
    CELLS,
    DEAD_LETTERS,
    ENTITIES,
    ENTITY_TABLE,
    cell_step,
    entity_step,
    ingest_step,
    progress_step,
)
from stream.settings import Settings
from stream.stages import build_stages


@dataclass(slots=True)
class LocalFlow:
    """Three stages over in-memory logs; ``clock`` gives processing time in ms."""

    settings: Settings
    clock: Callable[[], int]
    input_partitions: int = 1
    ingest: IngestStage = field(init=False)
    entities: EntityStage = field(init=False)
    cells: CellStage = field(init=False)
    entity_table: dict[bytes, bytes] = field(default_factory=dict)
    cell_table: dict[bytes, bytes] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    record_log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    counts: BatchCounts = field(default_factory=BatchCounts)
    _offsets: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        topics = self.settings.input_topics.values()
        stages = build_stages(self.settings, dict.fromkeys(topics, self.input_partitions), self.entity_table,
                              self.cell_table)
        self.ingest, self.entities, self.cells = stages.ingest, stages.entities, stages.cells

    def _next_offset(self, log: str, partition: int) -> int:
        offset = self._offsets[(log, partition)]
        self._offsets[(log, partition)] = offset + 1
        return offset

    def send(self, kind: Kind, payload: bytes | None, partition: int = 0) -> None:
        """Produce one raw message to an input topic and run it through every stage."""
        self.send_batch([(kind, payload, partition)])

    def send_batch(self, messages: list[tuple[Kind, bytes | None, int]]) -> None:
        """Produce several messages, processed as one ingest batch."""
        topics = self.settings.input_topics
        batch = [InputMessage(kind, topics[kind], part, self._next_offset(topics[kind], part), None, payload)
                 for kind, payload, part in messages]
        result = self._step(lambda out: ingest_step(self.ingest, batch, self._owned(), self.clock(),
                                                    self.settings.partitions, out))
        self.counts.merge(result.counts)

    def tick(self) -> None:
        """A watermark report with no events, as the periodic timer sends."""
        self._step(lambda out: progress_step(self.ingest, self._owned(), [], self.clock(), self.settings.partitions,
                                             out))

    def settle(self) -> None:
        """The timer's report once the records every cell holds back (``KPI_RECORD_INTERVAL``) may go out, as the
        worker's next reports after traffic pauses: then the last record of each key is the current truth. The
        report, and the stages it reaches, run at the clock plus that interval; the clock itself does not move."""
        clock = self.clock
        self.clock = lambda: clock() + self.settings.record_interval_ms
        try:
            self.tick()
        finally:
            self.clock = clock

    def _owned(self) -> list[str]:
        return [source_name(topic, p) for topic in self.settings.input_topics.values()
                for p in range(self.input_partitions)]

    def _run_entity(self, partition: int, envelope: bytes) -> None:
        offset = self._next_offset("entities", partition)
        for result in self._step(lambda out: entity_step(self.entities, {partition: [(offset, envelope)]},
                                                         self.clock(), out)):
            self.counts.merge(result.counts)

    def _run_cells(self, partition: int, envelope: bytes) -> None:
        offset = self._next_offset("cells", partition)
        for result in self._step(lambda out: cell_step(self.cells, {partition: [(offset, envelope)]}, self.clock(),
                                                       out)):
            self.counts.merge(result.counts)

    def _step(self, step: Callable[[MemoryOutput], Coroutine[Any, Any, T]]) -> T:
        """Run a step, then each message it sent to an internal topic through that topic's stage, in the order
        sent: depth first, once the step is over (as on the broker, after the sender's table writes)."""
        sent: list[tuple[str, int, bytes]] = []
        tables = {ENTITY_TABLE: self.entity_table, CELL_TABLE: self.cell_table}
        result = run_now(step(MemoryOutput(tables, self.records, self.dead_letters,
                                           lambda *message: sent.append(message), self.record_log)))
        for route, partition, value in sent:
            (self._run_entity if route == ENTITIES else self._run_cells)(partition, value)
        return result

    def latest(self, kpi: str, size: str, start: str, **dimensions: str) -> dict[str, Any] | None:
        """The current record of one KPI key, or None."""
        for record in self.records.values():
            if (record["kpi"] == kpi and record["window"]["size"] == size and record["window"]["start"] == start
                    and record["dimensions"] == dimensions):
                return record
        return None


class MemoryOutput:
    """A step's output held in memory (``LocalFlow``, the scheduled test flow): tables are dicts, KPI records and
    dead letters are kept decoded, as a consumer of their topics reads them, and each message to an internal
    topic is handed to ``forward`` as (route, partition, value).

    Args:
        tables: each table's dict, by table name.
        records: the last KPI record per key.
        dead_letters: the dead letters, in order.
        forward: takes each message sent to an internal topic.
        record_log: every KPI record in order, when kept.
    """

    def __init__(self, tables: Mapping[str, MutableMapping[bytes, bytes]], records: dict[str, dict[str, Any]],
                 dead_letters: list[dict[str, Any]], forward: Callable[[str, int, bytes], object],
                 record_log: list[tuple[str, dict[str, Any]]] | None = None) -> None:
        self._tables, self._records, self._dead_letters = tables, records, dead_letters
        self._forward, self._record_log = forward, record_log

    async def send(self, route: str, value: bytes, partition: int | None = None, key: bytes | None = None) -> None:
        if route in (ENTITIES, CELLS):
            self._forward(route, partition or 0, value)
        elif route == DEAD_LETTERS:
            self._dead_letters.append(orjson.loads(value))
        else:
            record_key, record = (key or b"").decode(), orjson.loads(value)
            self._records[record_key] = record
            if self._record_log is not None:
                self._record_log.append((record_key, record))

    async def write(self, table: str, partition: int, writes: dict[bytes, bytes | None]) -> None:
        apply_writes(self._tables[table], writes)

    async def delivered(self) -> None:
        """Nothing to wait for: every send is done when it returns."""


T = TypeVar("T")


def run_now(step: Coroutine[Any, Any, T]) -> T:
    """Run a step over an output that never waits (an in-memory one) to its end, without an event loop."""
    try:
        step.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    step.close()
    raise RuntimeError("a step over an in-memory output waited for something")
