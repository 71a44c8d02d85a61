"""Table keys: the bytes stored tables already hold, and which partition owns a key."""

from __future__ import annotations

import pytest

from stream.core.cells import CellId
from stream.pipeline.keys import (
    CHUNK_KEY_PREFIX,
    WATERMARK_KEY_PREFIX,
    cell_key,
    cell_of,
    cell_partition,
    chunk_key,
    chunked_key,
    lead_key,
    lead_partition,
    seen_key,
    visitor_key,
    watermark_key,
)
from stream.pipeline.routing import partition_for

CELL = CellId("lead_volume", 3_600_000, 0, "email", None)


@pytest.mark.parametrize(("key", "stored"), [
    (lead_key("L-1é"), b"l:L-1\xc3\xa9"),
    (visitor_key("v-9"), b"v:v-9"),
    (seen_key("leads", "e-1"), b"s:leads\x00e-1"),
    (watermark_key(3), b"\x00wm:3"),
    (watermark_key(3, "peers"), b"\x00wm:3peers"),
    (cell_key(CELL), b'["lead_volume",3600000,0,"email",null,null]'),
    (chunk_key(b'["x"]', 2, 0), b'\x00ck:2:0:["x"]'),
])
def test_keys_are_the_bytes_earlier_versions_stored(key: bytes, stored: bytes) -> None:
    assert key == stored


def test_reserved_keys_begin_with_a_byte_no_entity_or_cell_key_has() -> None:
    assert WATERMARK_KEY_PREFIX[0] == CHUNK_KEY_PREFIX[0] == 0
    for key in (lead_key("a"), visitor_key("a"), seen_key("leads", "a"), cell_key(CELL)):
        assert key[0] != 0


def test_a_chunk_key_names_the_key_it_is_a_part_of() -> None:
    key = cell_key(CELL)
    assert chunked_key(chunk_key(key, 12, 3)) == key
    assert cell_of(key) == CELL


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_exactly_one_partition_owns_each_lead_and_cell(partitions: int) -> None:
    for lead in ("L-1", "L-2", "lead with spaces", "L-é"):
        owners = [p for p in range(partitions) if lead_partition(lead_key(lead), partitions) == p]
        assert owners == [partition_for(lead, partitions)]
    for cell in (CELL, CELL._replace(channel="ads"), CellId("page_views", 60_000, 0, None, None, "/a")):
        owners = [p for p in range(partitions) if cell_partition(cell_key(cell), partitions) == p]
        assert owners == [partition_for(cell.routing_key(), partitions)]
