"""The offsets ledger: per partition, what the consumer handed over, what the agents handled, what must be read
again, and whether an input partition is caught up.

Every rule about offsets lives here, in one plain object with no Faust, mode or aiokafka import: the consumer
(``stream.runtime.faust_internals.Consumer``) feeds it what it fetches, seeks and loses in a rebalance, and asks
it whether to hand a message over; the batch loop (``stream.runtime.batches``) asks it which events were not
handled yet; the progress timer asks it whether an input partition has nothing more to read. A partition is
any hashable value (Faust's ``TP`` in the worker, a tuple in the tests).

Why each rule exists:

- **Read again after a seek.** Faust's recovery resumes the stream partitions *before* it seeks them to their
  committed offsets, and the batch being delivered when the seek lands goes on from the old position. So a
  newly assigned stream partition is *to read again*: its fetched messages are dropped until the first fetch
  after the seek (``assigned`` / ``sought`` / ``take_reseeks``).
- **Read again at a jump.** A message that comes ahead of the offset expected next has its partition read
  again from the expected offset, once; the same jump seen again from there is a real gap (offsets compacted
  away, transaction markers), which may be committed past (``admit``). Faust's own check compares with its
  read offset, which is the next offset right after a seek but the last one read afterwards, so a message
  missing right after a seek was no gap to it.
- **Read again after a rebalance hand-over.** At the end of a rebalance Faust resumes and seeks the stream
  partitions, then resumes the flow, which empties the streams' queues: a message handed over in between is
  lost (measured in the scale-out test: the first message after a rebalance, delivered 1 ms before "Worker
  ready", never reached its agent). It is read again once the flow runs.
- **Offsets the fetcher skipped are no jump.** The consumer reads ``read_committed``: the records of aborted
  upstream transactions and the transaction markers are skipped by the fetcher, and compaction removes records,
  so offsets are missing from a partition's records without anything being lost. A fetch whose starting
  position is the offset expected next vouches for everything up to its end position (``fetched``): a jump
  inside it is delivered at once (the skipped offsets registered as a gap, to commit past), and once every
  record it returned is delivered, the offset expected next is its end (``fetched_through``), so a partition
  whose last record is a marker is caught up. A seek, or a partition read again, ends the vouching.
- **Handled once per process.** After an unclean restart Faust can resume fetching before it seeks back to
  the committed offset, handing the same records over twice in one process; the agents skip what they have
  handled (``first_time``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# A high watermark older than this is not trusted to say a partition is caught up. Each fetch response carries
# the high watermark of every partition fetched (aiokafka uses no fetch sessions), every KPI_FETCH_MAX_WAIT
# (100 ms) on an idle topic, so a fresh one is never older than that plus a busy event loop's delay. What it
# prevents (tests/runtime/test_offsets.py): the first progress report after a broker stall, made before any
# fetch answered, would take a partition read up to its last known high watermark as idle, and count its idle
# time through the stall; input appended as the broker resumed, with event times inside that jump, would then
# be late. It holds the watermark back for at most this long after a fetch answers.
STALE_HIGHWATER_S = 2.0


class Admission(enum.Enum):
    """What the consumer does with a fetched message (see ``OffsetLedger.admit``)."""

    DELIVER = "deliver"
    DROP = "drop"  # to be read again: the partition is re-sought before its next fetch
    DELIVER_PAST_GAP = "deliver past gap"  # a jump seen twice: the offsets skipped are not there


class Unknown(enum.Enum):
    """Why the next offset to handle of a partition is not known from the ledger alone."""

    READ_AGAIN = "read again"  # fetched messages are being dropped: the consumer's position is past them
    NOT_SOUGHT = "not sought"  # nothing known yet: the consumer's position says


@dataclass(slots=True)
class OffsetLedger:
    """Offsets per partition, from the consumer's fetches and seeks to the agents' handling."""

    # Last offset an agent handled, per partition (stream partitions only).
    handled: dict[Hashable, int] = field(default_factory=dict)
    # Last offset handed to the streams, per partition: the agent has still to take what lies above ``handled``.
    delivered: dict[Hashable, int] = field(default_factory=dict)
    # Stream partitions whose fetched messages are dropped until they are sought again.
    stale: set[Hashable] = field(default_factory=set)
    # Offset to seek each partition to before the next fetch.
    reseek: dict[Hashable, int] = field(default_factory=dict)
    # The jump a partition was read again for, per partition: seen again, it is a gap.
    jumps: dict[Hashable, tuple[int, int]] = field(default_factory=dict)
    # The offset expected next from each stream partition, from its last seek on (changelogs are not tracked).
    expected: dict[Hashable, int] = field(default_factory=dict)
    # The fetch each stream partition is being delivered from, as (start, end) positions, while it started at the
    # offset expected next: the offsets in it that no record was delivered for are not there to read.
    vouched: dict[Hashable, tuple[int, int]] = field(default_factory=dict)

    # -- the consumer's side ------------------------------------------------------------------------------------

    def assigned(self, partitions: Iterable[Hashable]) -> None:
        """Stream partitions just assigned: what is fetched for them before their seek is dropped."""
        for partition in partitions:
            self.stale.add(partition)
            self.vouched.pop(partition, None)

    def sought(self, partition: Hashable, offset: int) -> None:
        """Faust sought ``partition`` to ``offset`` (its committed offset, or 0 without one)."""
        self.expected[partition] = offset
        self.vouched.pop(partition, None)
        if partition in self.stale:
            self.reseek[partition] = offset

    def take_reseeks(self) -> dict[Hashable, int]:
        """The seeks to make before the next fetch; from then on those partitions deliver again."""
        partitions, self.reseek = self.reseek, {}
        self.stale.difference_update(partitions)
        self.expected.update(partitions)
        for partition in partitions:
            self.vouched.pop(partition, None)
        return partitions

    def fetched(self, partition: Hashable, start: int, end: int) -> None:
        """The consumer's fetcher returned the records of ``partition`` between its positions ``start`` and
        ``end``, skipping what is not there to read (transaction markers, aborted transactions, compacted
        records). Vouched for only when it starts at the offset expected next: a fetch made before a seek, or
        after records that were never delivered, vouches for nothing."""
        if partition not in self.stale and self.expected.get(partition) == start and end > start:
            self.vouched[partition] = (start, end)
        else:
            self.vouched.pop(partition, None)

    def fetched_through(self, partition: Hashable) -> tuple[int, int] | None:
        """Every record of the vouched fetch of ``partition`` was delivered: the offsets after its last record up
        to its end are not there (a trailing transaction marker, say), and the one expected next is its end.

        Returns:
            The offsets passed over, ``(first, end)``, to register as a gap; None when there are none.
        """
        fetch = self.vouched.pop(partition, None)
        expected = self.expected.get(partition)
        if fetch is None or expected is None or not fetch[0] <= expected < fetch[1]:
            return None
        self.expected[partition] = fetch[1]
        return expected, fetch[1]

    def admit(self, partition: Hashable, offset: int, rebalancing: bool) -> tuple[Admission, int]:
        """Whether to hand the message at ``offset`` over, and the offset expected before it.

        Args:
            partition: the message's partition.
            offset: its offset.
            rebalancing: whether a rebalance is under way (a message handed over then is lost).

        Returns:
            The admission, with the offset that was expected next (for a gap: where it begins).
        """
        if partition in self.stale:
            return Admission.DROP, offset  # fetched before the seek that reads it again
        expected = self.expected.get(partition)
        if expected is None:
            self.delivered[partition] = offset
            return Admission.DELIVER, offset  # a changelog partition, which recovery seeks on its own
        if rebalancing:
            log.info("consumer: %s delivered offset %d before the rebalance ended; reading again from %d",
                     _name(partition), offset, min(offset, expected))
            self._read_again(partition, min(offset, expected))
            return Admission.DROP, expected
        admission = Admission.DELIVER
        fetch = self.vouched.get(partition)
        if offset > expected and fetch is not None and fetch[0] <= expected and offset < fetch[1]:
            admission = Admission.DELIVER_PAST_GAP  # skipped by the fetcher: not there to read
        elif offset > expected:
            if self.jumps.pop(partition, None) != (expected, offset):
                log.info("consumer: %s delivered offset %d where %d was next; reading again from there",
                         _name(partition), offset, expected)
                self.jumps[partition] = (expected, offset)
                self._read_again(partition, expected)
                return Admission.DROP, expected
            log.warning("consumer: offsets %d..%d of %s are not there after reading again; taken as a gap",
                        expected, offset - 1, _name(partition))
            admission = Admission.DELIVER_PAST_GAP
        if offset >= expected:
            self.expected[partition] = offset + 1
        self.delivered[partition] = offset
        return admission, expected

    def _read_again(self, partition: Hashable, offset: int) -> None:
        self.stale.add(partition)
        self.reseek[partition] = offset
        self.vouched.pop(partition, None)

    def revoked(self, partitions: Iterable[Hashable]) -> None:
        """Partitions taken away by a rebalance: the consumer forgets them (see ``forget_handled`` for the agents)."""
        for partition in partitions:
            self.stale.discard(partition)
            self.delivered.pop(partition, None)
            self.reseek.pop(partition, None)
            self.jumps.pop(partition, None)
            self.expected.pop(partition, None)
            self.vouched.pop(partition, None)

    # -- the agents' side ---------------------------------------------------------------------------------------

    def first_time(self, partition: Hashable, offset: int) -> bool:
        """Whether an agent handles ``offset`` of ``partition`` for the first time in this process (and note it)."""
        if offset > self.handled.get(partition, -1):
            self.handled[partition] = offset
            return True
        return False

    def forget_handled(self, partitions: Iterable[Hashable]) -> None:
        """Revoked partitions start over from their committed offset when they come back."""
        for partition in partitions:
            self.handled.pop(partition, None)

    def next_to_handle(self, partition: Hashable) -> int | Unknown:
        """The offset of the next message of ``partition`` an agent has to handle: one past the last it handled
        (or past the offsets the fetcher skipped after it, once it has handled every message delivered), or
        before it has handled any the next the consumer delivers."""
        if partition in self.handled:
            handled = self.handled[partition]
            expected = self.expected.get(partition)
            if expected is not None and expected > handled + 1 and self.delivered.get(partition, -1) <= handled:
                return expected
            return handled + 1
        if partition in self.stale:
            return Unknown.READ_AGAIN
        expected = self.expected.get(partition)
        return Unknown.NOT_SOUGHT if expected is None else expected

    def caught_up(self, partition: Hashable, next_offset: int | None, highwater: int | None,
                  highwater_age_s: float | None, stale_after_s: float) -> bool:
        """Whether an input partition has nothing left for the agent: everything up to the broker's high watermark
        handled, the high watermark fresh, and nothing handed over still waiting in the agent's queue.

        Unknown counts as not caught up: a partition not fetched yet (no high watermark), or whose next offset
        to handle is not known (``next_offset`` None). ``stale_after_s`` bounds the age of a high watermark that
        is trusted (see ``STALE_HIGHWATER_S``).
        """
        return not (highwater is None or next_offset is None or next_offset < highwater
                    or highwater_age_s is None or highwater_age_s > stale_after_s
                    or self.delivered.get(partition, -1) > self.handled.get(partition, -1))


def _name(partition: Hashable) -> str:
    """``topic[partition]`` for a Faust ``TP`` (or any (topic, partition) pair), else the value itself."""
    if isinstance(partition, tuple) and len(partition) == 2:
        return f"{partition[0]}[{partition[1]}]"
    return str(partition)
