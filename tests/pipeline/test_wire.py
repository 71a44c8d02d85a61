"""The internal topics' messages: typed records that encode to the bytes earlier versions wrote and read them back."""

from __future__ import annotations

import pytest

from stream.core.cells import CellId
from stream.pipeline.wire import (
    CellDeltaItem,
    CellEnvelope,
    EntityEnvelope,
    LeadValue,
    PeerProgress,
    RoutedEvent,
    chunked,
)

LEAD = RoutedEvent("leads", "e1", 1_000, "L1", {"channel": "email", "campaign": None}, "leads", 2, 17,
                   '{"event_id":"e1"}')
# Bytes an earlier version wrote to the entity topic: ingest's envelope, and a peer's, whose progress went into
# ``wm`` under an '@' name.
OLD_INGEST_ENVELOPE = (b'{"ev":[["leads","e1",1000,"L1",{"channel":"email","campaign":null},"leads",2,17,'
                       b'"{\\"event_id\\":\\"e1\\"}"]],"wm":{"leads:2":900,"spend:0":null}}')
OLD_PEER_ENVELOPE = (b'{"ev":[["lead-value","lv:L1",1000,"v1",{"lead":"L1","value":{"ct":1000,"pl":"5.00"}},'
                     b'"",0,0,""]],"wm":{"@entities:3":900}}')
OLD_PEER_REPORT = b'{"ev":[],"wm":{"@entities:0":0}}'
OLD_CELL_ENVELOPE = b'{"src":1,"d":[[["lead_volume",3600000,0,"email",null,null],42,{"n":1}]],"wm":900}'


def test_ingest_envelopes_encode_to_the_bytes_earlier_versions_wrote() -> None:
    envelope = EntityEnvelope([LEAD], {"leads:2": 900, "spend:0": None})
    assert envelope.encode() == OLD_INGEST_ENVELOPE
    assert EntityEnvelope.decode(OLD_INGEST_ENVELOPE) == envelope


def test_a_peer_report_written_into_wm_by_an_earlier_version_is_read_as_the_peer_s_progress() -> None:
    decoded = EntityEnvelope.decode(OLD_PEER_ENVELOPE)
    assert decoded == EntityEnvelope([LeadValue("L1", "v1", 1000, {"ct": 1000, "pl": "5.00"})], {},
                                     PeerProgress(3, 900))
    assert EntityEnvelope.decode(OLD_PEER_REPORT) == EntityEnvelope([], {}, PeerProgress(0, 0))
    mixed = b'{"ev":[],"wm":{"leads:0":5,"@entities:1":7}}'
    assert EntityEnvelope.decode(mixed) == EntityEnvelope([], {"leads:0": 5}, PeerProgress(1, 7))


@pytest.mark.parametrize("raw", [b'{"ev":[],"wm":{"@entities:0":1,"@entities:1":2}}',
                                 b'{"ev":[],"wm":{"@entities:0":null}}'])
def test_an_envelope_naming_no_single_peer_progress_is_a_defect(raw: bytes) -> None:
    with pytest.raises(ValueError, match="one peer"):
        EntityEnvelope.decode(raw)


def test_peer_progress_has_its_own_field_and_lead_values_keep_their_wire_layout() -> None:
    value = LeadValue("L1", "v1", 1000, None)
    envelope = EntityEnvelope([value], {}, PeerProgress(3, 900))
    assert envelope.encode() == (b'{"ev":[["lead-value","lv:L1",1000,"v1",{"lead":"L1","value":null},"",0,0,""]],'
                                 b'"wm":{},"peer":[3,900]}')
    assert EntityEnvelope.decode(envelope.encode()) == envelope


def test_cell_envelopes_encode_to_the_bytes_earlier_versions_wrote() -> None:
    envelope = CellEnvelope(1, [CellDeltaItem(CellId("lead_volume", 3_600_000, 0, "email", None), 42, {"n": 1})],
                            900)
    assert envelope.encode() == OLD_CELL_ENVELOPE
    assert CellEnvelope.decode(OLD_CELL_ENVELOPE) == envelope
    assert isinstance(CellEnvelope.decode(OLD_CELL_ENVELOPE).deltas[0].cell, CellId)


@pytest.mark.parametrize(("sizes", "limit", "expected"), [
    ([], 10, [(True, [])]),  # nothing: one empty chunk, so the progress still goes out
    ([3, 3, 3], 10, [(True, [0, 1, 2])]),
    ([3, 3, 3, 3], 10, [(False, [0, 1, 2]), (True, [3])]),
    ([5, 5, 5], 10, [(False, [0, 1]), (True, [2])]),  # a chunk may fill the limit exactly
    ([20, 1, 20], 10, [(False, [0]), (False, [1]), (True, [2])]),  # an item over the limit goes alone
    ([1] * 5, 2, [(False, [0, 1]), (False, [2, 3]), (True, [4])]),
])
def test_chunks_keep_order_stay_within_the_limit_and_mark_the_last(sizes: list[int], limit: int,
                                                                  expected: list[tuple[bool, list[int]]]) -> None:
    assert list(chunked(list(range(len(sizes))), limit, sizes)) == expected


@pytest.mark.parametrize(("count", "limit"), [(0, 3), (1, 3), (3, 3), (4, 3), (7, 3), (9, 3)])
def test_counted_chunks_are_the_chunks_of_items_of_size_one(count: int, limit: int) -> None:
    items = list(range(count))
    assert list(chunked(items, limit)) == list(chunked(items, limit, [1] * count))
