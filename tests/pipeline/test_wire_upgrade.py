"""A rolling upgrade of the internal topics' form: the flow's output is the same whichever form each message has."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from stream.core.events import Kind
from stream.pipeline.wire import UnknownVersion, WireRefused
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from tests.eventset import DAY_START, heartbeats, mixed

KINDS = {kind.value: kind for kind in Kind}
INPUT_PARTITIONS = 2


def earlier_form(raw: bytes) -> bytes:
    """An envelope as the version before tags wrote it: the same object without ``v``."""
    doc = orjson.loads(raw)
    assert doc.pop("v") == 2
    return orjson.dumps(doc)


@dataclass
class UpgradingFlow(LocalFlow):
    """A flow whose internal messages were each written by a worker of either version, as ``old`` decides."""

    old: Any = None  # (message number) -> whether an earlier-version worker wrote it
    forms: dict[str, int] = field(default_factory=lambda: {"earlier": 0, "tagged": 0})

    def _form(self, envelope: bytes) -> bytes:
        written_by_old = self.old(sum(self.forms.values()))
        self.forms["earlier" if written_by_old else "tagged"] += 1
        return earlier_form(envelope) if written_by_old else envelope

    def _run_entity(self, partition: int, envelope: bytes) -> None:
        super()._run_entity(partition, self._form(envelope))

    def _run_cells(self, partition: int, envelope: bytes) -> None:
        super()._run_cells(partition, self._form(envelope))


def _run(old: Any) -> UpgradingFlow:
    clock = [DAY_START]
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "3"})
    flow = UpgradingFlow(settings, clock=lambda: clock[0], input_partitions=INPUT_PARTITIONS, old=old)
    messages, _ = mixed()
    rand = random.Random(0)
    for start in range(0, len(messages), 5):
        flow.send_batch([(KINDS[topic], raw, rand.randrange(INPUT_PARTITIONS))
                         for topic, raw in messages[start:start + 5]])
        clock[0] += 10
    beats = heartbeats(list(settings.input_topics.values()), INPUT_PARTITIONS, DAY_START + 3 * 86_400_000)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    flow.tick()
    return flow


@pytest.mark.parametrize(("name", "old"), [
    ("alternating", lambda number: number % 2 == 0),
    ("old, then new", lambda number: number < 400),
    ("new, then old again (a roll-back)", lambda number: 300 <= number < 700),
    ("all new", lambda number: False),
])
def test_kpi_output_is_the_same_whichever_version_wrote_each_internal_message(name: str, old: Any) -> None:
    before = _run(lambda number: True)
    during = _run(old)
    assert during.forms["tagged"] > 0 and before.forms["tagged"] == 0, name
    assert during.record_log == before.record_log
    assert during.dead_letters == before.dead_letters
    assert during.entity_table == before.entity_table and during.cell_table == before.cell_table


@pytest.mark.parametrize(("run", "raw", "error", "message"), [
    ("_run_entity", b'{"v":3,"ev":[]}', UnknownVersion, "^entity partition 1, offset 0: an envelope of the entity "
                                                        "topic at version 3; this worker reads versions 1, 2"),
    ("_run_cells", b'{"v":3,"d":[]}', UnknownVersion, "^cell partition 1, offset 0: an envelope of the cell topic at "
                                                      "version 3;"),
    ("_run_cells", b'{"v":2,"src":0,"d":[[1]],"wm":0}', WireRefused, "^cell partition 1, offset 0: a malformed "
                                                                     "envelope of the cell topic, version 2"),
])
def test_a_stage_refuses_an_envelope_it_cannot_read_naming_where_it_was_read(run: str, raw: bytes,
                                                                             error: type[Exception],
                                                                             message: str) -> None:
    flow = LocalFlow(Settings.from_env({"KPI_PARTITIONS": "3"}), clock=lambda: DAY_START)
    with pytest.raises(error, match=message):
        getattr(flow, run)(1, raw)
