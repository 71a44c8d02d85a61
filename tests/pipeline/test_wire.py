"""The internal topics' messages: typed records, versioned, that still read what earlier versions wrote."""

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
    UnknownVersion,
    WireRefused,
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
# Version 2: version 1 with its tag first.
NEW_INGEST_ENVELOPE = b'{"v":2,' + OLD_INGEST_ENVELOPE[1:]
NEW_CELL_ENVELOPE = b'{"v":2,' + OLD_CELL_ENVELOPE[1:]
CELL = CellId("lead_volume", 3_600_000, 0, "email", None)


def test_ingest_envelopes_encode_tagged_with_their_version_and_read_the_untagged_earlier_form() -> None:
    envelope = EntityEnvelope([LEAD], {"leads:2": 900, "spend:0": None})
    assert envelope.encode() == NEW_INGEST_ENVELOPE
    assert EntityEnvelope.decode(NEW_INGEST_ENVELOPE) == envelope
    assert EntityEnvelope.decode(OLD_INGEST_ENVELOPE) == envelope


@pytest.mark.parametrize("envelope", [
    EntityEnvelope([], {}),
    EntityEnvelope([LEAD, LEAD._replace(event_id="e2", attrs={})], {"leads:2": 900, "spend:0": None}),
    EntityEnvelope([LeadValue("L1", "v1", 1000, {"ct": 1000, "pl": "5.00"}), LeadValue("L2", "v1", 2000, None)], {},
                   PeerProgress(3, 900)),
    EntityEnvelope([], {}, PeerProgress(0, 0)),
])
def test_every_entity_record_type_survives_a_round_trip(envelope: EntityEnvelope) -> None:
    raw = envelope.encode()
    assert raw.startswith(b'{"v":2,')
    decoded = EntityEnvelope.decode(raw)
    assert decoded == envelope
    assert [type(item) for item in decoded.events] == [type(item) for item in envelope.events]


@pytest.mark.parametrize("envelope", [
    CellEnvelope(0, [], 0),
    CellEnvelope(2, [CellDeltaItem(CELL, 42, {"n": 1}),
                     CellDeltaItem(CellId("funnel", 86_400_000, 0, None, None, "other"), 43, {"s": {"mql": 2}})],
                 -5),
])
def test_every_cell_record_type_survives_a_round_trip(envelope: CellEnvelope) -> None:
    raw = envelope.encode()
    assert raw.startswith(b'{"v":2,')
    decoded = CellEnvelope.decode(raw)
    assert decoded == envelope
    assert all(type(item.cell) is CellId for item in decoded.deltas)


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
    with pytest.raises(WireRefused, match="names one peer with a progress"):
        EntityEnvelope.decode(raw)


def test_peer_progress_has_its_own_field_and_lead_values_keep_their_wire_layout() -> None:
    value = LeadValue("L1", "v1", 1000, None)
    envelope = EntityEnvelope([value], {}, PeerProgress(3, 900))
    assert envelope.encode() == (b'{"v":2,"ev":[["lead-value","lv:L1",1000,"v1",{"lead":"L1","value":null},"",0,0,'
                                 b'""]],"wm":{},"peer":[3,900]}')
    assert EntityEnvelope.decode(envelope.encode()) == envelope


def test_cell_envelopes_encode_tagged_with_their_version_and_read_the_untagged_earlier_form() -> None:
    envelope = CellEnvelope(1, [CellDeltaItem(CELL, 42, {"n": 1})], 900)
    assert envelope.encode() == NEW_CELL_ENVELOPE
    assert CellEnvelope.decode(NEW_CELL_ENVELOPE) == envelope
    assert CellEnvelope.decode(OLD_CELL_ENVELOPE) == envelope
    assert isinstance(CellEnvelope.decode(OLD_CELL_ENVELOPE).deltas[0].cell, CellId)


def _entity(*items: str, head: str = '"v":2,', tail: str = '') -> bytes:
    return f'{{{head}"ev":[{",".join(items)}],"wm":{{}}{tail}}}'.encode()


ITEM = '["leads","e1",1000,"L1",{},"leads",2,17,"{}"]'
UNKNOWN = "this worker reads versions 1, 2. A newer version of the app most likely wrote it"


@pytest.mark.parametrize(("raw", "error", "message"), [
    (_entity(head='"v":3,'), UnknownVersion, f"entity topic at version 3; {UNKNOWN}"),
    (b'{"v":3,"events":[]}', UnknownVersion, "entity topic at version 3;"),  # a later layout: the version first
    (_entity(head='"v":0,'), UnknownVersion, "entity topic at version 0;"),
    (_entity(ITEM.replace(',"{}"]', "]")), WireRefused, r"version 2: Expected `array` of length 9 - at `\$.ev\[0\]`"),
    (_entity(ITEM, ITEM.replace("]", ",1]"), head=""), WireRefused,
     r"version 1: Expected `array` of length 9 - at `\$.ev\[1\]`"),
    (_entity(ITEM.replace("1000", '"1000"')), WireRefused, r"Expected `int`, got `str` - at `\$.ev\[0\]\[2\]`"),
    (_entity(ITEM.replace("1000", "1000.5")), WireRefused, r"Expected `int`, got `float` - at `\$.ev\[0\]\[2\]`"),
    (_entity(ITEM.replace("{}", "[]", 1)), WireRefused, r"Expected `object`, got `array` - at `\$.ev\[0\]\[4\]`"),
    (_entity(ITEM.replace('"L1"', "null")), WireRefused, r"Expected `str`, got `null` - at `\$.ev\[0\]\[3\]`"),
    (_entity('["lead-value","lv:L1",1000,"v1",{"lead":"L1"},"",0,0,""]'), WireRefused,
     "carries a lead value whose attrs are not a lead id and a value"),
    (_entity(tail=',"peer":[1]'), WireRefused, r"Expected `array` of length 2 - at `\$.peer`"),
    (_entity(tail=',"x":1'), WireRefused, "version 2: Object contains unknown field `x`"),
    (b'{"v":2,"ev":[]}', WireRefused, "Object missing required field `wm`"),
    (b'{"v":"2","ev":[],"wm":{}}', WireRefused, "no version that can be read: Expected `int`, got `str`"),
    (b"garbage", WireRefused, "a malformed envelope of the entity topic, no version that can be read"),
    (b'{"v":2,"ev":[],"wm":{"@entities:1":5}}', WireRefused, "at version 2 names a peer in wm"),
])
def test_an_entity_envelope_this_worker_cannot_read_is_refused_saying_why(raw: bytes, error: type[Exception],
                                                                          message: str) -> None:
    with pytest.raises(error, match=message):
        EntityEnvelope.decode(raw)


DELTA = '[["lead_volume",3600000,0,"email",null,null],42,{}]'


@pytest.mark.parametrize(("raw", "error", "message"), [
    (b'{"v":0,"src":1,"d":[],"wm":1}', UnknownVersion, f"cell topic at version 0; {UNKNOWN}"),
    (b'{"v":3,"src":1,"d":[[1]],"wm":1}', UnknownVersion, "cell topic at version 3;"),
    (f'{{"v":2,"src":1,"d":[{DELTA.replace(",{}", "")}],"wm":1}}'.encode(), WireRefused,
     r"version 2: Expected `array` of length 3 - at `\$.d\[0\]`"),
    (f'{{"src":1,"d":[{DELTA.replace("{}", "{},7")}],"wm":1}}'.encode(), WireRefused,
     r"version 1: Expected `array` of length 3 - at `\$.d\[0\]`"),
    (f'{{"v":2,"src":1,"d":[{DELTA.replace("null]", "null,null]")}],"wm":1}}'.encode(), WireRefused,
     r"Expected `array` of length 5 to 6 - at `\$.d\[0\]\[0\]`"),
    (f'{{"v":2,"src":1,"d":[{DELTA.replace("3600000", "[3600000]")}],"wm":1}}'.encode(), WireRefused,
     r"Expected `int`, got `array` - at `\$.d\[0\]\[0\]\[1\]`"),
    (f'{{"v":2,"src":1,"d":[{DELTA.replace("{}", "null")}],"wm":1}}'.encode(), WireRefused,
     r"Expected `object`, got `null` - at `\$.d\[0\]\[2\]`"),
    (b'{"v":2,"src":1,"d":[],"wm":null}', WireRefused, r"Expected `int`, got `null` - at `\$.wm`"),
    (b'{"v":2,"src":"1","d":[],"wm":1}', WireRefused, r"Expected `int`, got `str` - at `\$.src`"),
])
def test_a_cell_envelope_this_worker_cannot_read_is_refused_saying_why(raw: bytes, error: type[Exception],
                                                                       message: str) -> None:
    with pytest.raises(error, match=message):
        CellEnvelope.decode(raw)


def test_a_refusal_names_where_the_message_was_read_and_keeps_its_kind() -> None:
    refused = UnknownVersion("an envelope of the cell topic at version 3").at("cell partition 2, offset 17")
    assert isinstance(refused, UnknownVersion)
    assert str(refused) == "cell partition 2, offset 17: an envelope of the cell topic at version 3"


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
