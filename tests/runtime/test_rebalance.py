"""What a rebalance does, decided without a broker (``Rebalances``), and carried out in that order by the worker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from stream.runtime.rebalance import REVOCATION_ORDER, Rebalances, Step, Topics
from stream.runtime.worker import Worker

TOPICS = Topics(inputs=frozenset({"leads", "page-views"}), entities="app-entities", cells="app-cells")
CHANGELOG = "app-entity-state-changelog"


def tps(*pairs: tuple[str, int]) -> set[TP]:
    return {TP(topic, partition) for topic, partition in pairs}


@pytest.mark.parametrize(
    ("revoked", "handled", "sources", "entities", "cells"),
    [
        # Every kind of partition a worker holds; the changelogs are Faust's to recover, not the ledger's.
        (tps(("leads", 0), ("page-views", 3), ("app-entities", 1), ("app-cells", 2), (CHANGELOG, 1)),
         tps(("leads", 0), ("page-views", 3), ("app-entities", 1), ("app-cells", 2)),
         ("leads:0", "page-views:3"), {1}, {2}),
        # Only internal partitions: no input progress to forget.
        (tps(("app-entities", 0), ("app-entities", 3)), tps(("app-entities", 0), ("app-entities", 3)), (), {0, 3},
         set()),
        # Nothing held (a worker's first rebalance): every step still runs, over nothing.
        (set(), set(), (), set(), set()),
    ],
)
def test_a_revocation_forgets_each_partition_where_it_is_kept(revoked: set[TP], handled: set[TP],
                                                              sources: tuple[str, ...], entities: set[int],
                                                              cells: set[int]) -> None:
    plan = Rebalances(TOPICS).revoked(revoked)
    assert (plan.handled, plan.sources, plan.entity_partitions, plan.cell_partitions) == (
        handled, sources, entities, cells)
    assert plan.steps == REVOCATION_ORDER


def test_batches_are_awaited_and_flushed_before_anything_is_forgotten() -> None:
    steps = list(REVOCATION_ORDER)
    assert steps[0] is Step.NOT_READY
    flushed = steps.index(Step.FLUSH_PRODUCER)
    assert steps.index(Step.WAIT_IN_FLIGHT) < flushed
    forgetting = [Step.FORGET_HANDLED, Step.FORGET_PROGRESS, Step.FORGET_ENTITIES, Step.FORGET_CELLS]
    assert all(steps.index(step) > flushed for step in forgetting)
    assert sorted(steps, key=lambda step: step.name) == sorted(Step, key=lambda step: step.name)


def test_an_assignment_tells_each_stage_all_its_partitions_and_counts_every_topic() -> None:
    plan = Rebalances(TOPICS).assigned(tps(("leads", 0), ("leads", 1), ("app-entities", 2), ("app-cells", 0),
                                           ("app-cells", 3), (CHANGELOG, 2)))
    assert (plan.entity_partitions, plan.cell_partitions) == ({2}, {0, 3})
    assert plan.per_topic == {"leads": 2, "app-entities": 1, "app-cells": 2, CHANGELOG: 1}


class Recorder:
    """Stands in for each object a revocation touches, noting every call in one list."""

    def __init__(self, calls: list[tuple[str, Any]], name: str) -> None:
        self._calls, self._name = calls, name

    def __getattr__(self, attribute: str) -> Any:
        def call(*args: Any) -> Any:
            self._calls.append((f"{self._name}.{attribute}", args[0] if args else None))
            return self if attribute == "labels" else None
        return call


def test_the_worker_carries_out_the_steps_in_the_order_given() -> None:
    calls: list[tuple[str, Any]] = []

    async def flush() -> None:
        calls.append(("producer.flush", None))

    async def wait_idle(timeout_s: float) -> bool:
        calls.append(("in_flight.wait_idle", None))
        return True

    metrics = SimpleNamespace(ready=Recorder(calls, "ready"), rebalances=Recorder(calls, "rebalances"),
                              forget_targets=lambda: calls.append(("metrics.forget_targets", None)))
    stages = SimpleNamespace(ingest=SimpleNamespace(progress=Recorder(calls, "progress")),
                             entities=Recorder(calls, "entities"), cells=Recorder(calls, "cells"))
    topics = {name: SimpleNamespace(get_topic_name=lambda name=name: f"app-{name}") for name in ("entities", "cells")}
    app = SimpleNamespace(producer=SimpleNamespace(flush=flush), consumer=SimpleNamespace(ledger=Recorder(calls,
                                                                                                         "ledger")))
    worker = Worker(app, None, stages, SimpleNamespace(topics=topics), inputs=None,  # type: ignore[arg-type]
                    input_kinds={"leads": "leads"}, metrics=metrics, clock=lambda: 0.0)  # type: ignore[arg-type]
    worker.in_flight = SimpleNamespace(wait_idle=wait_idle)  # type: ignore[assignment]
    asyncio.run(worker.on_revoked(None, tps(("leads", 1), ("app-entities", 0), ("app-cells", 3), (CHANGELOG, 0))))
    assert calls == [
        ("ready.set", 0), ("rebalances.inc", None), ("metrics.forget_targets", None),
        ("in_flight.wait_idle", None),
        ("producer.flush", None),
        ("ledger.forget_handled", frozenset(tps(("leads", 1), ("app-entities", 0), ("app-cells", 3)))),
        ("progress.forget", ("leads:1",)),
        ("entities.forget", frozenset({0})),
        ("cells.forget", frozenset({3})),
    ]
