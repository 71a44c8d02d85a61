"""The offsets ledger: a message that comes ahead of the next offset expected, reading again, and catching up."""

from __future__ import annotations

import math

import pytest

from stream.pipeline.eventtime.sources import SourceProgress
from stream.runtime.offsets import STALE_HIGHWATER_S, Admission, OffsetLedger, Unknown

TOPIC = ("t-entities", 1)


def ledger(next_offset: int | None = 6) -> OffsetLedger:
    """A ledger as a seek to ``next_offset`` left it (None: a partition without a seek of its own)."""
    fresh = OffsetLedger()
    if next_offset is not None:
        fresh.sought(TOPIC, next_offset)
    return fresh


def gaps(found: list[tuple[Admission, int, int]]) -> list[tuple[int, int]]:
    return [(expected, offset + 1) for admission, expected, offset in found if admission is Admission.DELIVER_PAST_GAP]


class Feed:
    """Messages of ``TOPIC`` fed to a ledger as the consumer does, with the gaps it registers."""

    def __init__(self, next_offset: int | None = 6) -> None:
        self.ledger = ledger(next_offset)
        self.rebalancing = False
        self.found: list[tuple[Admission, int, int]] = []

    def __call__(self, offset: int) -> bool:
        admission, expected = self.ledger.admit(TOPIC, offset, self.rebalancing)
        self.found.append((admission, expected, offset))
        return admission is not Admission.DROP

    def gaps(self) -> list[tuple[int, int]]:
        return gaps(self.found)

    def reseek(self) -> None:
        """What the next fetch does first: seek the partitions to be read again, and take their messages again."""
        self.ledger.take_reseeks()


def test_messages_in_order_are_delivered() -> None:
    in_order = Feed()
    assert [in_order(offset) for offset in (6, 7, 8)] == [True, True, True]
    assert in_order.ledger.expected[TOPIC] == 9 and not in_order.ledger.reseek and not in_order.gaps()


def test_the_first_message_after_a_seek_missing_reads_the_partition_again() -> None:
    # Faust compares with the committed offset here (6, the next to read): 7 is no gap to it, and acking 7
    # commits 8, past 6. That lost the first message after a rebalance in the scale-out test.
    in_order = Feed(6)
    assert in_order(7) is False
    assert in_order.ledger.reseek == {TOPIC: 6} and TOPIC in in_order.ledger.stale and not in_order.gaps()


def test_a_first_jump_reads_the_partition_again_from_the_offset_expected() -> None:
    in_order = Feed()
    assert in_order(6) is True
    assert in_order(41) is False
    assert not in_order.gaps()  # nothing is taken as a gap, so nothing is committed past
    assert in_order.ledger.reseek == {TOPIC: 7}
    assert TOPIC in in_order.ledger.stale  # the message that jumped, and those after it, are dropped until then


def test_messages_dropped_until_the_seek_are_no_gap() -> None:
    in_order = Feed()
    assert in_order(41) is False
    assert in_order(42) is False
    assert not in_order.gaps() and in_order.ledger.reseek == {TOPIC: 6}


def test_the_partition_read_again_delivers_from_the_offset_expected() -> None:
    in_order = Feed()
    in_order(41)
    in_order.reseek()
    assert [in_order(offset) for offset in (6, 7)] == [True, True]
    assert in_order.ledger.expected[TOPIC] == 8 and not in_order.gaps()


def test_the_same_jump_after_reading_again_is_a_gap() -> None:
    in_order = Feed()
    in_order(41)
    in_order.reseek()
    assert in_order(41) is True
    assert in_order.gaps() == [(6, 42)]
    assert not in_order.ledger.reseek and TOPIC not in in_order.ledger.stale and in_order.ledger.expected[TOPIC] == 42


def test_another_jump_after_reading_again_is_read_again_too() -> None:
    in_order = Feed()
    in_order(41)
    in_order.reseek()
    assert [in_order(offset) for offset in range(6, 20)] == [True] * 14
    assert in_order(41) is False
    assert not in_order.gaps() and in_order.ledger.reseek == {TOPIC: 20}


def test_a_message_read_again_below_the_next_offset_is_delivered_and_changes_nothing() -> None:
    # The agents' offset guard drops what they have handled already.
    in_order = Feed()
    in_order(6)
    in_order(7)
    assert in_order(6) is True
    assert in_order.ledger.expected[TOPIC] == 8 and not in_order.ledger.reseek


def test_a_message_handed_over_before_a_rebalance_ends_is_read_again_after_it() -> None:
    # Faust empties the streams' queues when it resumes the flow, after the partitions are sought and resumed.
    in_order = Feed(6)
    in_order.rebalancing = True
    assert in_order(6) is False and in_order(7) is False
    assert in_order.ledger.reseek == {TOPIC: 6} and TOPIC in in_order.ledger.stale
    in_order.rebalancing = False
    in_order.reseek()
    assert [in_order(offset) for offset in (6, 7)] == [True, True]
    assert in_order.ledger.expected[TOPIC] == 8 and not in_order.gaps()


def test_a_partition_without_a_seek_of_its_own_is_not_checked() -> None:
    # Changelog partitions: table recovery seeks and reads them itself.
    in_order = Feed(None)
    assert in_order(41) is True and not in_order.ledger.reseek


def test_a_newly_assigned_partition_drops_what_it_fetched_until_its_seek_is_made_again() -> None:
    # Faust resumes a partition before seeking it to its committed offset: what comes in between is dropped.
    book = OffsetLedger()
    book.assigned([TOPIC])
    assert book.admit(TOPIC, 90, rebalancing=False)[0] is Admission.DROP
    book.sought(TOPIC, 40)
    assert book.reseek == {TOPIC: 40}
    assert book.take_reseeks() == {TOPIC: 40} and not book.stale and not book.reseek
    assert book.admit(TOPIC, 40, rebalancing=False)[0] is Admission.DELIVER
    assert book.delivered[TOPIC] == 40


def test_a_revoked_partition_is_forgotten_by_the_consumer_side_only() -> None:
    # The agents forget what they handled once their running batches are over (``forget_handled``).
    book = ledger(6)
    book.admit(TOPIC, 6, rebalancing=False)
    assert book.first_time(TOPIC, 6)
    book.admit(TOPIC, 41, rebalancing=False)
    book.revoked([TOPIC])
    assert not (book.expected or book.delivered or book.reseek or book.stale or book.jumps)
    assert book.handled == {TOPIC: 6}
    book.forget_handled([TOPIC])
    assert book.handled == {}


@pytest.mark.parametrize(("offsets", "kept"), [
    ([1, 2, 3], [1, 2, 3]),
    ([1, 2, 2, 3], [1, 2, 3]),  # handed over twice in one process
    ([5, 3, 6], [5, 6]),  # below the last handled: resumed before the seek back
])
def test_an_offset_is_handled_once_per_process(offsets: list[int], kept: list[int]) -> None:
    book = OffsetLedger()
    assert [offset for offset in offsets if book.first_time(TOPIC, offset)] == kept


def test_the_next_offset_to_handle_comes_from_what_was_handled_then_from_the_seek() -> None:
    book = OffsetLedger()
    assert book.next_to_handle(TOPIC) is Unknown.NOT_SOUGHT
    book.assigned([TOPIC])
    assert book.next_to_handle(TOPIC) is Unknown.READ_AGAIN
    book.sought(TOPIC, 12)
    book.take_reseeks()
    assert book.next_to_handle(TOPIC) == 12
    book.first_time(TOPIC, 15)
    assert book.next_to_handle(TOPIC) == 16


@pytest.mark.parametrize(("next_offset", "highwater", "age_s", "delivered", "handled", "caught_up"), [
    (10, 10, 0.1, 9, 9, True),
    (9, 10, 0.1, 8, 8, False),  # one message left on the broker
    (10, 10, 0.1, 9, 8, False),  # fetched, still in the agent's queue
    (None, 10, 0.1, -1, -1, False),  # next offset unknown
    (10, None, None, 9, 9, False),  # never fetched
    (10, 10, 2.5, 9, 9, False),  # high watermark too old to trust
    (10, 10, None, 9, 9, False),
])
def test_an_input_partition_is_caught_up_only_when_nothing_is_left_or_unknown(
        next_offset: int | None, highwater: int | None, age_s: float | None, delivered: int, handled: int,
        caught_up: bool) -> None:
    book = OffsetLedger()
    if delivered >= 0:
        book.delivered[TOPIC] = delivered
    if handled >= 0:
        book.handled[TOPIC] = handled
    assert book.caught_up(TOPIC, next_offset, highwater, age_s, stale_after_s=2.0) is caught_up


# -- offsets the fetcher skipped (read_committed: transaction markers, aborted transactions; compaction) ----------

def test_a_jump_inside_a_fetch_that_starts_where_expected_is_delivered_at_once_as_a_gap() -> None:
    # 6, 7 committed; 8 their commit marker; 9..11 an aborted transaction, 12 its abort marker; 13 committed.
    feed = Feed(6)
    feed.ledger.fetched(TOPIC, 6, 14)
    assert [feed(offset) for offset in (6, 7, 13)] == [True, True, True]
    assert feed.gaps() == [(8, 14)] and not feed.ledger.reseek and not feed.ledger.stale
    assert feed.ledger.expected[TOPIC] == 14


@pytest.mark.parametrize("start", [5, 7])
def test_a_fetch_that_does_not_start_where_expected_vouches_for_nothing(start: int) -> None:
    # A fetch made before a seek, or after messages that were never handed over (Faust stopped early).
    feed = Feed(6)
    feed.ledger.fetched(TOPIC, start, 14)
    assert feed(6) is True
    assert feed(13) is False and feed.ledger.reseek == {TOPIC: 7} and not feed.gaps()
    assert feed.ledger.fetched_through(TOPIC) is None


def test_a_seek_ends_what_a_fetch_vouched_for() -> None:
    feed = Feed(6)
    feed.ledger.fetched(TOPIC, 6, 14)
    feed.ledger.sought(TOPIC, 6)
    assert feed(9) is False and feed.ledger.reseek == {TOPIC: 6}
    assert feed.ledger.fetched_through(TOPIC) is None


def test_a_partition_read_again_ends_what_its_fetch_vouched_for() -> None:
    feed = Feed(6)
    feed.ledger.fetched(TOPIC, 6, 14)
    feed.rebalancing = True
    assert feed(6) is False
    feed.rebalancing = False
    assert feed.ledger.fetched_through(TOPIC) is None and feed.ledger.expected[TOPIC] == 6


def test_a_fetch_through_passes_the_markers_after_its_last_message() -> None:
    # 6, 7 committed, 8 their commit marker: the end of the partition (high watermark 9).
    feed = Feed(6)
    feed.ledger.fetched(TOPIC, 6, 9)
    assert [feed(offset) for offset in (6, 7)] == [True, True]
    assert feed.ledger.fetched_through(TOPIC) == (8, 9)
    assert feed.ledger.expected[TOPIC] == 9
    assert feed.ledger.fetched_through(TOPIC) is None  # once
    # The next transaction's first message is no jump.
    assert feed(9) is True and not feed.ledger.reseek


def test_a_fetch_of_markers_only_passes_them() -> None:
    feed = Feed(8)
    feed.ledger.fetched(TOPIC, 8, 9)
    assert feed.ledger.fetched_through(TOPIC) == (8, 9)
    assert feed.ledger.expected[TOPIC] == 9


def test_a_stale_partition_vouches_for_nothing() -> None:
    book = OffsetLedger()
    book.assigned([TOPIC])
    book.sought(TOPIC, 6)
    book.fetched(TOPIC, 6, 9)
    assert book.fetched_through(TOPIC) is None and book.expected[TOPIC] == 6


def test_a_partition_ending_in_a_marker_is_caught_up_once_its_messages_are_handled() -> None:
    book = ledger(6)
    book.fetched(TOPIC, 6, 9)  # 6, 7 and the commit marker 8: high watermark 9
    for offset in (6, 7):
        book.admit(TOPIC, offset, rebalancing=False)
    book.fetched_through(TOPIC)
    book.first_time(TOPIC, 6)
    assert book.next_to_handle(TOPIC) == 7  # 7 still waits for the agent
    assert not book.caught_up(TOPIC, 7, 9, 0.1, stale_after_s=2.0)
    book.first_time(TOPIC, 7)
    assert book.next_to_handle(TOPIC) == 9
    assert book.caught_up(TOPIC, book.next_to_handle(TOPIC), 9, 0.1, stale_after_s=2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(("trusted_for_s", "jumps"), [(STALE_HIGHWATER_S, False), (math.inf, True)])
def test_a_high_watermark_from_before_a_stall_is_not_trusted_to_say_a_partition_is_idle(
        trusted_for_s: float, jumps: bool) -> None:
    """What ``STALE_HIGHWATER_S`` prevents: the first progress report after a 20 s broker stall, made before any
    fetch answered, takes the partition whose last known high watermark it had read up to as idle, and its idle
    time counts through the stall; an event appended as the broker resumed, inside that jump, then comes late."""
    last_event = 1_763_798_400_000
    progress = SourceProgress(idle_timeout_ms=10_000)
    progress.observe("p", last_event, now_ms=0)
    progress.mark_busy([], 12_000)  # caught up when last reported: idle 2 s past the timeout
    assert progress.report(["p"], 12_000) == {"p": last_event + 2_000}
    # The stall: no report for 20 s. Then the report before the first fetch answers: offsets up to 9 handled, the
    # high watermark known is 10, from a fetch response 20 s old; messages were appended since.
    book = OffsetLedger(handled={"p": 9}, delivered={"p": 9})
    caught_up = book.caught_up("p", 10, 10, highwater_age_s=20.0, stale_after_s=trusted_for_s)
    progress.mark_busy([] if caught_up else ["p"], 32_000)
    reported = progress.report(["p"], 32_000)["p"]
    assert reported is not None
    assert (reported - last_event > 2_000) is jumps, reported - last_event
