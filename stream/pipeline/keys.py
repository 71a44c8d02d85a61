"""Every key space of the two tables, and which partition owns a key.

The entity table (all of an entity partition's state, so that a batch writes one changelog partition):

    l:<lead id>                       a lead's state (``core.funnel.to_doc``)
    v:<visitor id>                    a visitor's state (``core.visitors.to_doc``)
    s:<kind>\\x00<event id>            an event id kept for deduplication; its value names its owner (see dedup)
    \\x00wm:<partition>                the partition's join of input progress
    \\x00wm:<partition>peers           the partition's join of the progress its peers report

The cell table:

    [family, size, start, channel, campaign, key]   a cell's state (JSON of its ``CellId``), or its chunks' names
    \\x00wm:<partition>                              the partition's join of the entity partitions' watermarks
    \\x00ck:<generation>:<index>:<cell key>          one part of a chunked cell state (see ``state.write_value``)

Reserved keys begin with a zero byte, which no lead, visitor, event or JSON key does. Tables of every owned
partition share one store, so a scan after an assignment keeps the keys its partition owns.
"""

from __future__ import annotations

from functools import lru_cache

import orjson

from stream.core import jsonbytes
from stream.core.cells import CellId
from stream.pipeline.routing import partition_for

LEAD_PREFIX = b"l:"
VISITOR_PREFIX = b"v:"
SEEN_PREFIX = b"s:"
# Tables keep each owned partition's watermark state under a reserved key beside their own keys.
WATERMARK_KEY_PREFIX = b"\x00wm:"
# The parts of a value too large for one changelog message (see ``state.write_value``), under reserved keys too.
CHUNK_KEY_PREFIX = b"\x00ck:"


def lead_key(lead_id: str) -> bytes:
    """Key of a lead in the entity table."""
    return LEAD_PREFIX + lead_id.encode("utf-8")


def visitor_key(visitor_id: str) -> bytes:
    """Key of a visitor in the entity table."""
    return VISITOR_PREFIX + visitor_id.encode("utf-8")


def seen_key(kind: str, event_id: str) -> bytes:
    """Key of an event id kept for deduplication (ids are unique per topic)."""
    return SEEN_PREFIX + kind.encode("utf-8") + b"\x00" + event_id.encode("utf-8")


def lead_partition(key: bytes, partitions: int) -> int:
    """The entity partition that owns the lead stored under ``key``."""
    return partition_for(key[len(LEAD_PREFIX):].decode("utf-8"), partitions)


def watermark_key(partition: int, name: str = "") -> bytes:
    """Reserved key of a partition's watermark state (``name`` tells several joins apart)."""
    return WATERMARK_KEY_PREFIX + str(partition).encode() + name.encode()


@lru_cache(maxsize=16_384)
def cell_key(cell: CellId) -> bytes:
    """Key of a cell in the cell table (the same cells change batch after batch, each read and written: kept for
    the latest cells asked, about 3 MB at most)."""
    return jsonbytes.dumps(list(cell))


def cell_of(key: bytes) -> CellId:
    """The cell stored under a cell key."""
    return CellId(*orjson.loads(key))


def cell_partition(key: bytes, partitions: int) -> int:
    """The cell partition that owns the cell stored under ``key``."""
    return partition_for(cell_of(key).routing_key(), partitions)


def chunk_key(key: bytes, generation: int, index: int) -> bytes:
    """Reserved key of one part of a chunked value."""
    return CHUNK_KEY_PREFIX + b"%d:%d:" % (generation, index) + key


def chunked_key(key: bytes) -> bytes:
    """The key of the value a chunk key is a part of."""
    return key[len(CHUNK_KEY_PREFIX):].split(b":", 2)[2]
