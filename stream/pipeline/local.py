"""The whole dataflow in one process with dicts for tables: for tests and for reasoning, no broker needed.

It runs the same three stage objects as the Faust agents, passes envelopes
through in-memory partition logs, and keeps the last KPI record per key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream.core.events import Kind
from stream.core.validation import Validator
from stream.pipeline.cells import CellStage
from stream.pipeline.counts import BatchCounts
from stream.pipeline.entities import EntityStage
from stream.pipeline.ingest import IngestStage, InputMessage, encode_envelope, encode_envelopes
from stream.pipeline.routing import source_name
from stream.pipeline.state import apply_writes
from stream.settings import Settings
from stream.stages import cell_config, entity_config


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
        cfg = self.settings
        validator = Validator(cfg.rates, cfg.max_event_bytes)
        self.ingest = IngestStage(validator, cfg.partitions, cfg.idle_partition_timeout_ms, cfg.max_future_skew_ms)
        sources = frozenset(source_name(topic, p) for topic in cfg.input_topics.values()
                            for p in range(self.input_partitions))
        self.entities = EntityStage(entity_config(cfg, sources), self.entity_table)
        self.cells = CellStage(cell_config(cfg), self.cell_table)

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
        now = self.clock()
        out = self.ingest.process(batch, now)
        self.counts.merge(out.counts)
        self.dead_letters.extend(record for _, record in out.dead_letters)
        # Progress is reported after the events it covers, as the Faust agent does.
        self.ingest.commit_progress(out, now)
        report = self._report(now)
        for entity_partition in range(self.settings.partitions):
            for envelope in encode_envelopes(out.envelopes.get(entity_partition, []), report):
                self._run_entity(entity_partition, envelope)

    def tick(self) -> None:
        """A watermark report with no events, as the periodic timer sends."""
        report = self._report(self.clock())
        for entity_partition in range(self.settings.partitions):
            self._run_entity(entity_partition, encode_envelope([], report))

    def _report(self, now: int) -> dict[str, int | None]:
        owned = [source_name(topic, p) for topic in self.settings.input_topics.values()
                 for p in range(self.input_partitions)]
        return self.ingest.progress.report(owned, now)

    def _run_entity(self, partition: int, envelope: bytes) -> None:
        offset = self._next_offset("entities", partition)
        out = self.entities.process(partition, [(offset, envelope)], self.clock())
        self.counts.merge(out.counts)
        self.dead_letters.extend(record for _, record in out.dead_letters)
        for cell_partition, cell_envelopes in sorted(out.envelopes.items()):
            for cell_envelope in cell_envelopes:
                self._run_cells(cell_partition, cell_envelope)
        apply_writes(self.entity_table, out.writes)
        for entity_partition, rerouted in sorted(out.reroutes.items()):
            self._run_entity(entity_partition, rerouted)

    def _run_cells(self, partition: int, envelope: bytes) -> None:
        offset = self._next_offset("cells", partition)
        out = self.cells.process(partition, [(offset, envelope)], self.clock())
        self.counts.merge(out.counts)
        for record in out.records:
            self.records[record.key] = record.record
            self.record_log.append((record.key, record.record))
        apply_writes(self.cell_table, out.writes)

    def latest(self, kpi: str, size: str, start: str, **dimensions: str) -> dict[str, Any] | None:
        """The current record of one KPI key, or None."""
        for record in self.records.values():
            if (record["kpi"] == kpi and record["window"]["size"] == size and record["window"]["start"] == start
                    and record["dimensions"] == dimensions):
                return record
        return None
