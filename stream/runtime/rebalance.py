"""What a rebalance does, in order: the partitions given up and those taken, turned into the steps the Faust
adapter carries out (``stream.runtime.worker``), decided here without a broker or an event loop.

Faust tells a worker of a rebalance in three signals, in this order:

1. **revoked** (every partition it had; the group's new assignment is not known yet): ``revoked`` answers the
   steps, in the order they must run (``Revocation``);
2. **assigned** (every partition it now has): ``assigned`` answers what each stage and gauge is told
   (``Assignment``); Faust then seeks the input and internal partitions to their committed offsets and recovers
   the tables (the stores' ``on_rebalance`` and ``on_recovery_completed``, ``stream.state``);
3. **rebalance complete**, once the tables are recovered: the worker is ready again.

Partitions *lost* (the member fenced after a missed session timeout, the group's generation moved on) have no
signal of their own: aiokafka revokes every partition when such a member rejoins, so they go through the same
revocation. The steps are written to hold for them: nothing kept about a partition given up is trusted when it
comes back (the handled offsets, the input progress and the stages' indexes are dropped and rebuilt from the
committed offsets and the tables, which recovery reads to the changelog's end); a batch still running is waited
for and its writes flushed, and events of the old generation taken after it are dropped before their handler
and never acked (``stream.runtime.batches.current_events``).

The consumer's own bookkeeping of a rebalance (which fetched messages are stale until their seek,
``OffsetLedger.assigned`` and ``revoked``) is made in ``stream.runtime.faust_internals.Consumer`` before Faust's
signals run, because Faust's fetcher can deliver between the two.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from faust.types import TP

from stream.pipeline.routing import source_name


class Step(enum.Enum):
    """One thing a revocation does (``Revocation.steps`` gives their order)."""

    NOT_READY = "not ready: leadgen_worker_ready 0, the rebalance counted, the target gauges cleared"
    WAIT_IN_FLIGHT = "wait for the batches taken before the revocation (at most REVOKE_WAIT_S)"
    FLUSH_PRODUCER = "flush the producer: their table writes reach the changelogs"
    FORGET_HANDLED = "the ledger forgets the offsets handled in the partitions given up"
    FORGET_PROGRESS = "ingest forgets the progress of the input partitions given up"
    FORGET_ENTITIES = "the entity stage drops the indexes of the entity partitions given up"
    FORGET_CELLS = "the cell stage drops the indexes of the cell partitions given up"


# Why this order: readiness drops first, so a rolling restart waiting for ready does not stop the next worker in
# the middle of this rebalance. The batches still running are awaited and their writes flushed before anything
# is forgotten: a batch finishing after its partition was forgotten would index it again, and a table write
# reaching the changelog after the new owner restored the table would be lost to it. What is forgotten last is
# rebuilt from the committed offsets and the tables when the partitions come back.
REVOCATION_ORDER = (Step.NOT_READY, Step.WAIT_IN_FLIGHT, Step.FLUSH_PRODUCER, Step.FORGET_HANDLED,
                    Step.FORGET_PROGRESS, Step.FORGET_ENTITIES, Step.FORGET_CELLS)


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics a worker's agents read: inputs, and the two internal topics of the entity and cell stages.
    Any other (the tables' changelogs) is Faust's to recover."""

    inputs: frozenset[str]
    entities: str
    cells: str

    def streamed(self, tp: TP) -> bool:
        """Whether an agent reads ``tp`` (an input or internal partition, not a changelog)."""
        return tp.topic in self.inputs or tp.topic in (self.entities, self.cells)


@dataclass(frozen=True, slots=True)
class Revocation:
    """What a revocation forgets, and the order of its steps."""

    handled: frozenset[TP]  # streamed partitions whose handled offsets the ledger forgets
    sources: tuple[str, ...]  # input partitions whose progress ingest forgets, by source name
    entity_partitions: frozenset[int]
    cell_partitions: frozenset[int]
    steps: tuple[Step, ...] = REVOCATION_ORDER


@dataclass(frozen=True, slots=True)
class Assignment:
    """What an assignment tells the stages and the gauges."""

    entity_partitions: frozenset[int]  # every entity partition owned now (indexed at the first batch after)
    cell_partitions: frozenset[int]
    per_topic: Mapping[str, int]  # partitions assigned per topic, changelogs included


@dataclass(frozen=True, slots=True)
class Rebalances:
    """Answers what each rebalance signal does for a worker reading ``topics``."""

    topics: Topics

    def revoked(self, partitions: Iterable[TP]) -> Revocation:
        """The steps of giving ``partitions`` up (every partition the worker had)."""
        revoked = frozenset(partitions)
        topics = self.topics
        return Revocation(
            handled=frozenset(tp for tp in revoked if topics.streamed(tp)),
            sources=tuple(sorted(source_name(tp.topic, tp.partition) for tp in revoked if tp.topic in topics.inputs)),
            entity_partitions=frozenset(tp.partition for tp in revoked if tp.topic == topics.entities),
            cell_partitions=frozenset(tp.partition for tp in revoked if tp.topic == topics.cells))

    def assigned(self, partitions: Iterable[TP]) -> Assignment:
        """What the stages and gauges are told of ``partitions`` (every partition the worker now has)."""
        assigned = frozenset(partitions)
        topics = self.topics
        return Assignment(
            entity_partitions=frozenset(tp.partition for tp in assigned if tp.topic == topics.entities),
            cell_partitions=frozenset(tp.partition for tp in assigned if tp.topic == topics.cells),
            per_topic=dict(Counter(tp.topic for tp in assigned)))
