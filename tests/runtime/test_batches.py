"""The batch loop: which events of a batch the agents may process, and the order of handling, failing, acking."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from stream.runtime.batches import EXIT_UNKNOWN_VERSION, BatchLoop, Group, InFlight, current_events
from stream.runtime.offsets import OffsetLedger


def event(offset: int, generation: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(offset=offset, generation_id=generation))


def test_events_fetched_in_the_current_generation_are_kept_in_order() -> None:
    batch = [event(1, 7), event(2, 7), event(3, 7)]
    assert current_events(batch, 7, flowing=True) == batch


def test_events_fetched_before_the_last_rebalance_are_left_out() -> None:
    stale, fresh = [event(40, 6), event(41, 6)], [event(40, 7)]
    assert current_events(stale + fresh, 7, flowing=True) == fresh


def test_nothing_is_processed_between_a_revocation_and_the_next_assignment() -> None:
    # Faust stops the flow when partitions are revoked; the generation changes only at the next assignment.
    assert current_events([event(1, 7), event(2, 7)], 7, flowing=False) == []


class Loop:
    """A batch loop over plain events, recording what it handles, acks and stops for."""

    def __init__(self, fail: bool = False, stopping: bool = False, generation: int = 7, flowing: bool = True) -> None:
        self.handled: list[list[int]] = []
        self.acked: list[list[int]] = []
        self.stopped: list[str] = []
        self.ledger = OffsetLedger()
        self.fail, self.stopping = fail, stopping
        self.generation, self.flowing = generation, flowing
        self.in_flight = InFlight()
        self.running_during_handle: list[bool] = []
        group = Group(generation=lambda: self.generation, flowing=lambda: self.flowing,
                      stopping=lambda: self.stopping, ack=lambda events: self.acked.append(offsets(events)))
        self.loop = BatchLoop("cells", self.handle, lambda: self.ledger, group, self.in_flight,
                              stop=self.stopped.append)

    async def handle(self, events: list[Any]) -> None:
        self.running_during_handle.append(not self.in_flight._idle.is_set())
        self.handled.append(offsets(events))
        if self.fail:
            raise RuntimeError("a defect")

    def run(self, events: list[Any]) -> None:
        """Run the loop over ``events`` taken in batches of three."""
        async def batches() -> AsyncIterator[list[Any]]:
            for start in range(0, len(events), 3):
                yield events[start:start + 3]

        asyncio.run(self.loop.run(batches()))


def partition_event(offset: int, generation: int = 7) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=("t", 0), offset=offset, generation_id=generation))


def offsets(events: list[Any]) -> list[int]:
    return [each.message.offset for each in events]


def test_a_batch_is_handled_in_flight_then_acked() -> None:
    loop = Loop()
    loop.run([partition_event(offset) for offset in range(6)])
    assert loop.handled == [[0, 1, 2], [3, 4, 5]] and loop.acked == [[0, 1, 2], [3, 4, 5]]
    assert loop.running_during_handle == [True, True] and loop.in_flight._idle.is_set()


def test_what_this_process_handled_already_is_not_handled_again_but_acked() -> None:
    loop = Loop()
    loop.run([partition_event(offset) for offset in (0, 1, 2, 1, 2, 3)])
    assert loop.handled == [[0, 1, 2], [3]] and loop.acked == [[0, 1, 2], [1, 2, 3]]


def test_a_stale_batch_is_neither_handled_nor_acked() -> None:
    loop = Loop(generation=8)
    loop.run([partition_event(offset) for offset in range(3)])
    assert loop.handled == [] and loop.acked == []
    loop = Loop(flowing=False)
    loop.run([partition_event(offset) for offset in range(3)])
    assert loop.handled == [] and loop.acked == []


def test_a_failed_batch_stops_the_worker_and_is_not_acked() -> None:
    loop = Loop(fail=True)
    loop.loop.stop = lambda stage: (loop.stopped.append(stage), (_ for _ in ()).throw(SystemExit(70)))[0]
    with pytest.raises(SystemExit):
        loop.run([partition_event(offset) for offset in range(3)])
    assert loop.stopped == ["cells"] and loop.acked == [] and loop.in_flight._idle.is_set()


def test_a_batch_failing_while_the_worker_stops_raises_without_the_fail_stop() -> None:
    loop = Loop(fail=True, stopping=True)
    with pytest.raises(RuntimeError, match="a defect"):
        loop.run([partition_event(offset) for offset in range(3)])
    assert loop.stopped == [] and loop.acked == []


# A cell batch meeting an envelope of a version this worker does not know, in a process of its own (it exits).
_MEET_UNKNOWN_VERSION = """
import logging
from stream.pipeline.wire import CellEnvelope, WireRefused
from stream.runtime.batches import fail_stop
logging.basicConfig(format="%(message)s")
try:
    try:
        CellEnvelope.decode(b'{"v":3,"cells":[]}')
    except WireRefused as refused:
        raise refused.at("cell partition 2, offset 17") from refused
except Exception:
    fail_stop("cell")
"""


def test_a_message_of_an_unknown_version_stops_the_worker_naming_the_versions_found_and_known() -> None:
    result = subprocess.run([sys.executable, "-c", _MEET_UNKNOWN_VERSION], capture_output=True, text=True,  # noqa: S603
                            timeout=60, check=False)
    assert result.returncode == EXIT_UNKNOWN_VERSION
    assert result.stderr.splitlines()[-1] == (
        "the worker cannot read a message of an internal topic: cell partition 2, offset 17: an envelope of the cell "
        "topic at version 3; this worker reads versions 1, 2. A newer version of the app most likely wrote it (a "
        "rolling upgrade): upgrade this worker (exit status 65)")
