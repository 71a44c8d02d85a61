"""The batch loop: how every agent takes its events, and the guarantees each batch gets, in one place.

One ``BatchLoop`` per agent. For each batch, in this order (``BatchLoop.run``):

1. **Take** the events ready in the agent's queue, up to ``KPI_BATCH_MAX`` (``stream.runtime.batching.queued_batches``).
2. **Drop what a rebalance made stale**: events fetched in an earlier generation of the consumer group, or
   taken while the flow is stopped (``current_events``). Left unacked, they are read again from the committed
   offsets by whoever owns their partitions now.
3. **Drop what this process handled already** (the offsets ledger's ``first_time``).
4. **Handle** the batch (the stage's step, ``stream.pipeline.steps``), counted as in flight so a rebalance
   waits for it (``InFlight``).
5. **Fail stop** if the handler raised while the worker is not stopping (``fail_stop``): the failed batch and
   everything after it are read again after the restart.
6. **Ack** the batch's events, only after success: their offsets may now be committed.

Nothing here imports Faust (only aiokafka's error classes): the loop gets its events, the group generation,
the flow state and the ack as arguments, so it is tested without a broker (``tests/runtime/test_batches.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from stream.pipeline.eventtime.join import StateRefused
from stream.pipeline.wire import UnknownVersion
from stream.runtime.offsets import OffsetLedger

log = logging.getLogger(__name__)

# Exit status of a worker stopped because a batch failed in a way no input explains (a defect, or a resource
# gone): a supervisor restarts it, and the batch is read again from the committed offsets.
EXIT_BATCH_FAILED = 70
# Exit status of a worker whose tables hold state its settings cannot carry on (another reporting calendar):
# sysexits' EX_CONFIG, as restarting it unchanged cannot help.
EXIT_STATE_REFUSED = 78
# Exit status of a worker that read an internal topic's message of a version it does not know, most likely written
# by a newer worker during a rolling upgrade: sysexits' EX_DATAERR. A restart helps once this worker is upgraded
# (or its partitions moved to one that is); until then it would meet the same message again.
EXIT_UNKNOWN_VERSION = 65
# Longest a rebalance waits for running batches (well inside the broker's rebalance timeout).
REVOKE_WAIT_S = 30.0
# A batch that fails with one of these failed for a missing ACL: the worker says so as its last line.
AUTHORIZATION_ERRORS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError,
                        TransactionalIdAuthorizationFailed)


class Message(Protocol):
    """What the loop reads of a fetched message (Faust's ``Message``)."""

    @property
    def tp(self) -> Hashable: ...

    @property
    def offset(self) -> int: ...

    @property
    def generation_id(self) -> int | None: ...


class Event(Protocol):
    """What the loop reads of an event (Faust's ``Event``)."""

    @property
    def message(self) -> Message: ...


E = TypeVar("E", bound=Event)


def current_events(events: list[E], generation: int | None, flowing: bool) -> list[E]:
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


def fail_stop(stage: str) -> None:
    """Stop the process now, as a SIGKILL would, after logging why.

    Faust's answer to an agent that raises is to start the agent again on the events after the failed batch.
    Those are processed and acked while the failed batch's are not, and its events come back only after the
    next restart, maybe behind windows the watermark closed meanwhile: they would be late. Stopping at once
    leaves everything from the failed batch on to be read again, which the stages treat as replays (the crash
    tests kill workers at any point). The error is logged with its traceback first.
    """
    error = sys.exc_info()[1]
    if isinstance(error, StateRefused):
        # Not a defect, and a restart with the same settings meets it again: the reason alone, as the last line.
        log.critical("the worker cannot carry on the state it was given: %s", error)
        logging.shutdown()
        os._exit(EXIT_STATE_REFUSED)
    if isinstance(error, UnknownVersion):
        # Not a defect of this worker either: its age. The message names the versions found and known.
        log.critical("the worker cannot read a message of an internal topic: %s (exit status %d)", error,
                     EXIT_UNKNOWN_VERSION)
        logging.shutdown()
        os._exit(EXIT_UNKNOWN_VERSION)
    log.critical("a %s batch failed with an error no input explains; stopping the worker (exit status %d) so "
                 "that a restart reads it again from the committed offsets", stage, EXIT_BATCH_FAILED,
                 exc_info=True)
    if isinstance(error, AUTHORIZATION_ERRORS):
        # The last line then says what the login lacks, not only which request the broker refused.
        log.critical("the broker refused this worker's login: %s; the worker needs every ACL that `kpi-stream acls` "
                     "lists", error)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


@dataclass(slots=True)
class Group:
    """What the loop asks of the consumer group while it runs (the Faust app answers in the worker)."""

    generation: Callable[[], int | None]  # the group's current generation
    flowing: Callable[[], bool]  # false from a revocation until the next assignment, and once stopping
    stopping: Callable[[], bool]  # the worker is stopping: errors come from the clients going away
    ack: Callable[[list[Any]], None]  # mark events safe to commit


@dataclass(slots=True)
class BatchLoop(Generic[E]):
    """Runs one agent: batches in, the handler over the events not handled yet, acks out (see the module)."""

    stage: str
    handle: Callable[[list[E]], Awaitable[None]]
    ledger: Callable[[], OffsetLedger]  # the consumer's ledger, which exists once the worker runs
    group: Group
    in_flight: InFlight
    stop: Callable[[str], None] = fail_stop

    async def run(self, batches: AsyncIterable[list[E]]) -> None:
        """Handle ``batches`` (as ``stream.runtime.batching.queued_batches`` takes them) until they end."""
        async for taken in batches:
            await self.run_batch(taken)

    async def run_batch(self, taken: list[E]) -> None:
        """Steps 2 to 6 of the module's list for one batch."""
        batch = current_events(taken, self.group.generation(), self.group.flowing())
        if len(batch) < len(taken):
            log.info("%d of %d events of a batch were fetched before partitions were revoked (rebalance "
                     "or stop): left unprocessed, to be read again from the committed offsets",
                     len(taken) - len(batch), len(taken))
        if not batch:
            return
        async with self.in_flight.batch():
            ledger = self.ledger()
            fresh = [event for event in batch if ledger.first_time(event.message.tp, event.message.offset)]
            try:
                await self.handle(fresh)
            except Exception:
                if self.group.stopping():
                    raise
                self.stop(self.stage)
            self.group.ack(batch)  # only after success: a failed batch is processed again after a restart
