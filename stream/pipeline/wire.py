"""The messages of the internal topics, as typed records with ``encode`` and ``decode``.

    ingest ──EntityEnvelope(events, progress)──> <app>-entities ──CellEnvelope(deltas, watermark)──> <app>-cells
    entity partition ──EntityEnvelope(lead values, peer)──> the other entity partitions (same topic)

On the wire a record is a compact JSON list and an envelope a JSON object with short keys, in the layout earlier
versions wrote: what is already in the topics at an upgrade is read as before (earlier versions carried a peer's
progress inside ``wm`` under an ``@`` name; :meth:`EntityEnvelope.decode` still reads that).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson

from stream.core.cells import CellId

# The kind of an item that is no input event but a lead's value sent to the partition that owns its visitor.
LEAD_VALUE = "lead-value"
# How earlier versions named an entity partition's progress inside ``wm`` ('@' begins no topic's name).
_LEGACY_PEER_PREFIX = "@entities:"

T = TypeVar("T")
# Builds a named tuple from a sequence without its Python-level ``__new__`` or ``_make``: decoding builds one per
# item, and that call was most of what typed records added to the entity stage's cost per event (see decode).
_tuple = tuple.__new__


class RoutedEvent(NamedTuple):
    """A valid input event as carried to the entity stage: normalised fields plus what a dead letter needs.

    A named tuple, not a dataclass: one is built per event read by the entity stage, and a tuple is built from the
    decoded list in C (``_make``), where a frozen dataclass's ``__init__`` sets nine attributes in Python.
    """

    kind: str
    event_id: str
    ts: int
    key: str  # the entity it is routed by: lead, visitor, or the event itself
    attrs: dict[str, Any]
    topic: str  # where it was read: topic, partition, offset, and the raw message (for a dead letter)
    partition: int
    offset: int
    raw: str

    def fields(self) -> list[Any]:
        """The wire form: the fields in order."""
        return list(self)


class LeadValue(NamedTuple):
    """A lead's value (creation time, pipeline, revenue; None: no longer this visitor's) for its visitor."""

    lead: str
    visitor: str
    ts: int
    value: dict[str, Any] | None

    def fields(self) -> list[Any]:
        """The wire form: laid out as a routed event with no source, as earlier versions read it."""
        return [LEAD_VALUE, f"lv:{self.lead}", self.ts, self.visitor, {"lead": self.lead, "value": self.value},
                "", 0, 0, ""]


EntityItem = RoutedEvent | LeadValue


def _lead_value(fields: list[Any]) -> LeadValue:
    attrs = fields[4]
    return LeadValue(attrs["lead"], fields[3], fields[2], attrs["value"])


class PeerProgress(NamedTuple):
    """How far an entity partition has processed its inputs, as it tells the others (see the entity stage)."""

    partition: int
    progress: int


@dataclass(frozen=True, slots=True)
class EntityEnvelope:
    """A message of the entity topic: items in order, then the progress they are covered by."""

    events: Sequence[EntityItem]
    progress: dict[str, int | None]  # input partition -> its progress (ingest's report; empty from a peer)
    peer: PeerProgress | None = None  # the sending entity partition's own progress (from a peer only)

    def encode(self) -> bytes:
        """Compact JSON: ``{"ev": [...], "wm": {...}}``, plus ``"peer": [partition, progress]`` from a peer."""
        doc: dict[str, Any] = {"ev": [item.fields() for item in self.events], "wm": self.progress}
        if self.peer is not None:
            doc["peer"] = list(self.peer)
        return orjson.dumps(doc)

    @staticmethod
    def decode(raw: bytes) -> EntityEnvelope:
        """Inverse of :meth:`encode`; also reads a peer's progress written under an ``@`` name in ``wm``."""
        doc = orjson.loads(raw)
        progress: dict[str, int | None] = doc["wm"]
        peer = doc.get("peer")
        if peer is not None:
            peer = PeerProgress(*peer)
        elif any(name.startswith(_LEGACY_PEER_PREFIX) for name in progress):
            peer, progress = _legacy_peer(progress)
        # Nine fields per event, as written (an item of another length would fail where a field is read).
        events = [_tuple(RoutedEvent, fields) if fields[0] != LEAD_VALUE else _lead_value(fields)
                  for fields in doc["ev"]]
        return EntityEnvelope(events, progress, peer)


def _legacy_peer(reports: dict[str, int | None]) -> tuple[PeerProgress, dict[str, int | None]]:
    """The peer's progress an earlier version put among the input progress, and the input progress without it."""
    peers = [name for name in reports if name.startswith(_LEGACY_PEER_PREFIX)]
    value = reports[peers[0]]
    if len(peers) != 1 or value is None:  # a sender only ever reported its own progress, and never None
        raise ValueError(f"an entity envelope names one peer with a progress, not {peers}")
    inputs = {name: progress for name, progress in reports.items() if name != peers[0]}
    return PeerProgress(int(peers[0][len(_LEGACY_PEER_PREFIX):]), value), inputs


class CellDeltaItem(NamedTuple):
    """A change to one cell, at a position in its source entity partition that makes a replay recognisable."""

    cell: CellId
    position: int  # offset of the entity envelope it came from
    delta: dict[str, Any]  # ``CellDelta.to_doc()``: decoded by the cell stage only when it applies it


@dataclass(frozen=True, slots=True)
class CellEnvelope:
    """A message of the cell topic: one entity partition's deltas, then the watermark it reports after them."""

    source: int  # the entity partition that sent it
    deltas: Sequence[CellDeltaItem]
    watermark: int

    def encode(self) -> bytes:
        """Compact JSON: ``{"src": partition, "d": [[cell fields, position, delta], ...], "wm": watermark}``."""
        return orjson.dumps({"src": self.source, "d": [[list(cell), position, delta]
                                                       for cell, position, delta in self.deltas],
                             "wm": self.watermark})

    @staticmethod
    def decode(raw: bytes) -> CellEnvelope:
        """Inverse of :meth:`encode`."""
        doc = orjson.loads(raw)
        return CellEnvelope(doc["src"], [_tuple(CellDeltaItem, (CellId(*cell), position, delta))
                                         for cell, position, delta in doc["d"]], doc["wm"])


def chunked(items: Sequence[T], limit: int, sizes: Iterable[int] | None = None) -> Iterator[tuple[bool, list[T]]]:
    """``items`` in order, in chunks whose ``sizes`` add up to at most ``limit``, each with whether it is the last.

    Both internal topics split a batch's items over several messages to stay below the broker's message size;
    a message's progress must cover every item before it, so only the last chunk may carry the batch's. An item
    larger than ``limit`` goes alone. No items give one empty chunk: the progress still goes out. Without
    ``sizes`` (one per item) each item counts one.
    """
    if sizes is None:  # sliced, not measured item by item: the cell deltas of a batch are many
        count = len(items)
        for start in range(0, count, limit):
            yield start + limit >= count, list(items[start:start + limit])
        if not count:
            yield True, []
        return
    chunk: list[T] = []
    total = 0
    for item, item_size in zip(items, sizes, strict=True):
        if chunk and total + item_size > limit:
            yield False, chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item_size
    yield True, chunk
