"""The entity stage's parts: the batch builder, the restore of waiting leads, and peer progress read in either form."""

from __future__ import annotations

import orjson
import pytest

from stream.core import jsonbytes
from stream.core.cells import CellDelta, CellId
from stream.core.funnel import LeadState, PendingChange, to_doc
from stream.pipeline.entities import EntityStage
from stream.pipeline.entities.batch import EntityBatch
from stream.pipeline.entities.leads import has_waiting_changes
from stream.pipeline.keys import lead_key, seen_key, watermark_key
from stream.pipeline.routing import partition_for, source_name
from stream.pipeline.wire import EntityEnvelope, PeerProgress
from stream.settings import Settings
from stream.stages import entity_config
from tests.eventset import DAY_START

WAITING = PendingChange("e1", DAY_START, "mql", None, ("stage-changes", 0, 4), '{"event_id":"e1"}')


@pytest.mark.parametrize(("state", "waiting"), [
    (LeadState(channel="email", created_ts=DAY_START), False),
    (LeadState(pending=[WAITING]), True),
    (LeadState(channel="email", campaign="pe", created_ts=DAY_START), False),  # the bytes hold '"pe"', no change
    (LeadState(channel="pe", pending=[WAITING]), True),
])
def test_a_stored_lead_waits_for_its_lead_only_with_waiting_changes(state: LeadState, waiting: bool) -> None:
    stored = jsonbytes.dumps(to_doc(state))
    assert has_waiting_changes(stored) is waiting
    assert ("pe" in orjson.loads(stored)) is waiting  # the field to_doc keeps waiting changes in


def test_a_batch_sends_one_delta_per_cell_per_envelope_at_its_offset() -> None:
    batch = EntityBatch({}, 3)
    cell = CellId("page_views", 3_600_000, DAY_START, "email", None)
    for views in (1, 2):
        delta = CellDelta()
        delta.add("views", views)
        batch.add_deltas({cell: delta})
    batch.end_envelope(7)
    batch.end_envelope(8)  # nothing new: no delta
    (target, items), = batch.deltas.items()
    assert target == partition_for(cell.routing_key(), 3)
    assert [(item.cell, item.position) for item in items] == [(cell, 7)]
    assert CellDelta.from_doc(items[0].delta).counts == {"views": 3}


def test_a_batch_writes_states_then_event_ids_then_progress() -> None:
    batch = EntityBatch({}, 1)
    batch.progress.set(watermark_key(0), b"{}")
    batch.seen.set(seen_key("leads", "e1"), b"[0,0]")
    batch.states.set(lead_key("L1"), b"{}")
    assert list(batch.output().writes) == [lead_key("L1"), seen_key("leads", "e1"), watermark_key(0)]


def _progress_after(peer_report: bytes) -> tuple[int | None, dict[bytes, bytes | None]]:
    """Watermark and writes of entity partition 0 of 2 after its inputs' progress, then a report from 1."""
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "2"})
    sources = frozenset(source_name(topic, 0) for topic in settings.input_topics.values())
    stage = EntityStage(entity_config(settings, sources), {})
    inputs = EntityEnvelope([], dict.fromkeys(sources, DAY_START + 5_000)).encode()
    out = stage.process(0, [(0, inputs), (1, peer_report)], DAY_START)
    return out.watermark, out.writes


def test_a_peer_report_in_the_earlier_form_moves_the_watermark_as_the_new_form_does() -> None:
    new = _progress_after(EntityEnvelope([], {}, PeerProgress(1, DAY_START + 3_000)).encode())
    old = _progress_after(b'{"ev":[],"wm":{"@entities:1":%d}}' % (DAY_START + 3_000))
    assert new == old
    assert new[0] == DAY_START + 3_000  # held back by the peer
