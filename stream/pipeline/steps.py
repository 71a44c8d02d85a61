"""Each stage's step: what it sends, writes and waits for, in which order, stated once for every runner.

A step runs a stage over one batch and puts the results out through an ``Output``: send a record, write a
batch of table changes (applied to the store and sent to its changelog), wait until everything put out so far
is delivered. The Faust worker (``stream.runtime.faust_output``), the in-memory ``LocalFlow`` and the randomly
scheduled test flow (``tests/pipeline/scheduled.py``) run these same steps over their own ``Output``.

The orders, and why:

- **ingest**: send the batch's events with the progress they are covered by, and its dead letters; wait for
  delivery; only then count the events into the shared input progress (so no timer report gets ahead of them).
  The batch is acked after the step, so its input offsets are committed only once the envelopes are delivered.
- **entities**: send cell deltas, reroutes and dead letters; wait; write the state; wait; then ack. A replayed
  batch recomputes the same deltas at the same positions and the cell stage skips what it has.
- **cells**: write the state; wait; send the KPI records derived from it; wait; then ack. KPI records have no
  position to deduplicate by, so they are sent only from persisted state.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from stream.pipeline.cells import CellOutput
from stream.pipeline.entities import EntityOutput
from stream.pipeline.ingest import IngestOutput, IngestStage, InputMessage, encode_envelope, encode_envelopes
from stream.pipeline.partitions import PartitionStage

# Where a step sends: the two internal topics, the dead-letter topic, and a KPI topic per family (``kpi_route``).
ENTITIES = "entities"
CELLS = "cells"
DEAD_LETTERS = "dead-letters"
# The tables a step writes.
ENTITY_TABLE = "entity-state"
CELL_TABLE = "cells"


def kpi_route(family: str) -> str:
    """The route of the KPI topic of ``family``."""
    return f"kpi:{family}"


class Output(Protocol):
    """Where a step's results go: records, table writes, and the wait for their delivery."""

    async def send(self, route: str, value: bytes, partition: int | None = None, key: bytes | None = None) -> None:
        """Send a record to ``route`` (a partition of its own, or by key)."""

    async def write(self, table: str, partition: int, writes: dict[bytes, bytes | None]) -> None:
        """Apply a batch's writes (None: delete) to a partition of ``table`` and send them to its changelog."""

    async def delivered(self) -> None:
        """Wait until everything sent and written so far is delivered."""


async def _send_dead_letters(out: Output, records: list[tuple[str, dict[str, Any]]]) -> None:
    for key, record in records:
        await out.send(DEAD_LETTERS, orjson.dumps(record), key=key.encode())


async def ingest_step(stage: IngestStage, messages: list[InputMessage], owned: list[str], now_ms: int,
                      entity_partitions: int, out: Output) -> IngestOutput:
    """Validate and route a batch of input messages.

    Args:
        stage: the ingest stage.
        messages: the batch.
        owned: the input partitions (sources) this worker owns, whose progress it reports.
        now_ms: processing time.
        entity_partitions: partitions of the entity topic; each gets the batch's progress.
        out: where results go.
    """
    result = stage.process(messages, now_ms)
    # Every entity partition gets the progress this batch makes, with the batch's events for it: once the batch
    # is acked its input offsets can be committed, and a next owner of those input partitions may find nothing
    # more there to report progress from.
    report = stage.progress.report_after(result.observed, owned, now_ms)
    for partition in range(entity_partitions):
        for envelope in encode_envelopes(result.envelopes.get(partition, []), report):
            await out.send(ENTITIES, envelope, partition=partition)
    await _send_dead_letters(out, result.dead_letters)
    await out.delivered()  # before the batch is acked and its input offsets can be committed
    stage.commit_progress(result, now_ms)  # the shared progress the timer reports moves on only now
    return result


async def progress_step(stage: IngestStage, owned: list[str], unread: list[str], now_ms: int,
                        entity_partitions: int, out: Output) -> None:
    """The timer's report: input progress reaches every entity partition even when no event does (idle input
    partitions advance; ``unread`` ones, with messages left to handle, do not)."""
    if not owned:
        return
    stage.progress.mark_busy(unread, now_ms)
    envelope = encode_envelope([], stage.progress.report(owned, now_ms))
    for partition in range(entity_partitions):
        await out.send(ENTITIES, envelope, partition=partition)


async def entity_step(stage: PartitionStage[EntityOutput], batch: dict[int, list[tuple[int, bytes]]], now_ms: int,
                      out: Output) -> list[EntityOutput]:
    """Run the entity stage over a batch of envelopes, per partition, as (offset, value) pairs."""
    # The partitions of a batch are processed first and their outputs delivered together: each partition's cell
    # deltas still reach the broker before its state is persisted, but with two round trips per batch rather
    # than two per partition.
    results = [(partition, stage.process(partition, envelopes, now_ms)) for partition, envelopes in batch.items()]
    for _, result in results:
        for target, envelopes in result.envelopes.items():
            for envelope in envelopes:
                await out.send(CELLS, envelope, partition=target)
        for target, envelope in result.reroutes.items():
            await out.send(ENTITIES, envelope, partition=target)
        await _send_dead_letters(out, result.dead_letters)
    await out.delivered()  # before the state that produced them is persisted
    for partition, result in results:
        await out.write(ENTITY_TABLE, partition, result.writes)
    await out.delivered()
    return [result for _, result in results]


async def cell_step(stage: PartitionStage[CellOutput], batch: dict[int, list[tuple[int, bytes]]], now_ms: int,
                    out: Output) -> list[CellOutput]:
    """Run the cell stage over a batch of envelopes, per partition, as (offset, value) pairs."""
    results = [(partition, stage.process(partition, envelopes, now_ms)) for partition, envelopes in batch.items()]
    # State first, then the records derived from it, for all of the batch's partitions at once.
    for partition, result in results:
        await out.write(CELL_TABLE, partition, result.writes)
    await out.delivered()
    for _, result in results:
        for record in result.records:
            await out.send(kpi_route(record.family), orjson.dumps(record.record), key=record.key.encode())
    await out.delivered()
    return [result for _, result in results]
