"""The messages of the internal topics, as typed records with ``encode`` and ``decode``.

    ingest ──EntityEnvelope(events, progress)──> <app>-entities ──CellEnvelope(deltas, watermark)──> <app>-cells
    entity partition ──EntityEnvelope(lead values, peer)──> the other entity partitions (same topic)

On the wire a record is a compact JSON list and an envelope a JSON object with short keys. An envelope names its
form's version first (``"v": 2``); version 1, what earlier versions wrote and what is in the topics at an upgrade,
has no ``v`` and is read as before (earlier versions carried a peer's progress inside ``wm`` under an ``@`` name;
:meth:`EntityEnvelope.decode` still reads that). Version 2 is version 1 with the tag: its records mean the same,
and a worker of the earlier version reads them as it reads its own (it ignores ``v``), so a rolling upgrade
computes the same numbers in either direction. A later version whose records mean something else must therefore
also break what version 1 reads (rename ``ev`` or ``d``, say), so that a worker still on version 1 fails at its
first look-up instead of counting wrong.

Decoding is strict: msgspec checks every field's type and every record's length in C while it parses (faster than
orjson's parse plus building the named tuples, measured on generated traffic), and an envelope that is malformed
or of a version this worker does not know raises :class:`WireRefused`. The stages let it stop the worker rather
than dead-letter it: the app wrote the record itself, so the events in it were accepted already and dropping them
would lose counts; a version above :data:`VERSION` means a newer worker wrote it during a rolling upgrade, which
this worker must not read until it is upgraded too (see ``stream.runtime.batches.fail_stop``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import msgspec
import orjson

from stream.core.cells import CellId

# The kind of an item that is no input event but a lead's value sent to the partition that owns its visitor.
LEAD_VALUE = "lead-value"
# An entity partition's name among progress reports ('@' begins no topic's name): in the peers' join it is stored
# in (``eventtime.entity.peer_name``), and inside ``wm`` in the envelopes earlier versions wrote.
PEER_PREFIX = "@entities:"

# The version of the envelopes this code writes, and every version it reads (1: no ``v``, as earlier versions wrote).
VERSION = 2
KNOWN_VERSIONS = (1, 2)

T = TypeVar("T")


class WireRefused(ValueError):
    """An internal topic's message this worker cannot read: malformed, or of a form it does not know."""

    def at(self, where: str) -> WireRefused:
        """The same refusal, its message prefixed with where the message was read (partition, offset)."""
        return type(self)(f"{where}: {self}")


class UnknownVersion(WireRefused):
    """An envelope of a version this worker does not know: most likely written by a newer worker."""


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
        """The wire form: the fields in order (decoded by msgspec from this class's annotations)."""
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


def _lead_value(item: RoutedEvent) -> LeadValue:
    """The lead value laid out as a routed event (see :meth:`LeadValue.fields`), its ``attrs`` checked."""
    attrs = item.attrs
    lead, value = attrs.get("lead"), attrs.get("value")
    if len(attrs) != 2 or not isinstance(lead, str) or not (value is None or isinstance(value, dict)):
        raise WireRefused(f"an envelope of the entity topic carries a lead value whose attrs are not a lead id "
                          f"and a value or null: {attrs!r:.200}")
    return LeadValue(lead, item.key, item.ts, value)


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
        """Compact JSON: ``{"v": 2, "ev": [...], "wm": {...}}``, plus ``"peer": [partition, progress]`` from a peer."""
        doc: dict[str, Any] = {"v": VERSION, "ev": [item.fields() for item in self.events], "wm": self.progress}
        if self.peer is not None:
            doc["peer"] = list(self.peer)
        return orjson.dumps(doc)

    @staticmethod
    def decode(raw: bytes) -> EntityEnvelope:
        """Inverse of :meth:`encode`, for versions 1 and 2; also reads a peer's progress written under an ``@`` name
        in ``wm`` (version 1).

        Raises:
            UnknownVersion: the envelope's ``v`` is none of :data:`KNOWN_VERSIONS`.
            WireRefused: the envelope is no JSON, lacks a field, has one this version does not know, or an item
                of another length or with a field of another type.
        """
        doc = _decode(_ENTITY_DECODER, raw, "entity")
        progress = doc.wm
        peer = doc.peer
        if any(name.startswith(PEER_PREFIX) for name in progress):
            if doc.v != 1 or peer is not None:  # only version 1 wrote the peer there, and only there
                raise WireRefused(f"an envelope of the entity topic at version {doc.v} names a peer in wm: "
                                  f"{sorted(progress)}")
            peer, progress = _legacy_peer(progress)
        events = [item if item.kind != LEAD_VALUE else _lead_value(item) for item in doc.ev]
        return EntityEnvelope(events, progress, peer)


def _legacy_peer(reports: dict[str, int | None]) -> tuple[PeerProgress, dict[str, int | None]]:
    """The peer's progress an earlier version put among the input progress, and the input progress without it."""
    peers = [name for name in reports if name.startswith(PEER_PREFIX)]
    value = reports[peers[0]]
    if len(peers) != 1 or value is None:  # a sender only ever reported its own progress, and never None
        raise WireRefused(f"an envelope of the entity topic names one peer with a progress, not {peers}")
    inputs = {name: progress for name, progress in reports.items() if name != peers[0]}
    return PeerProgress(int(peers[0][len(PEER_PREFIX):]), value), inputs


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
        """Compact JSON: ``{"v": 2, "src": partition, "d": [[cell fields, position, delta], ...], "wm": watermark}``."""
        return orjson.dumps({"v": VERSION, "src": self.source, "d": [[list(cell), position, delta]
                                                                     for cell, position, delta in self.deltas],
                             "wm": self.watermark})

    @staticmethod
    def decode(raw: bytes) -> CellEnvelope:
        """Inverse of :meth:`encode`, for versions 1 and 2.

        Raises:
            UnknownVersion: the envelope's ``v`` is none of :data:`KNOWN_VERSIONS`.
            WireRefused: the envelope is malformed (as for :meth:`EntityEnvelope.decode`).
        """
        doc = _decode(_CELL_DECODER, raw, "cell")
        return CellEnvelope(doc.src, doc.d, doc.wm)


# Both versions in one typed form: version 2 only adds ``v`` to version 1, which has none (hence the default).
# Unknown fields are refused: a field this code would ignore is one whose meaning it does not know.
class _EntityDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ev: list[RoutedEvent]  # lead values too, in a routed event's layout (see LeadValue.fields)
    wm: dict[str, int | None]
    peer: PeerProgress | None = None
    v: int = 1


class _CellDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    src: int
    d: list[CellDeltaItem]
    wm: int
    v: int = 1


class _Versioned(msgspec.Struct):
    """Only the version of an envelope, of any form (other fields ignored)."""

    v: int = 1


_ENTITY_DECODER = msgspec.json.Decoder(_EntityDoc)
_CELL_DECODER = msgspec.json.Decoder(_CellDoc)
_VERSION_DECODER = msgspec.json.Decoder(_Versioned)
DocT = TypeVar("DocT", _EntityDoc, _CellDoc)


def _decode(decoder: msgspec.json.Decoder[DocT], raw: bytes, name: str) -> DocT:
    """An envelope decoded and its version checked, or refused with what is wrong with it (``name``: whose)."""
    try:
        doc = decoder.decode(raw)
    except msgspec.DecodeError as error:  # the validation error too, which subclasses it
        # Its version first: a later form fails this version's layout, and a newer worker is the likelier reason.
        version = _version_of(raw)
        if version is not None:
            _check_version(version, name)
        named = f"version {version}" if version is not None else "no version that can be read"
        raise WireRefused(f"a malformed envelope of the {name} topic, {named}: {error}; it begins "
                          f"{bytes(raw[:120])!r}") from None
    _check_version(doc.v, name)
    return doc


def _version_of(raw: bytes) -> int | None:
    """The ``v`` an envelope names (1 when none), or None when it is no JSON object or ``v`` no integer."""
    try:
        return _VERSION_DECODER.decode(raw).v
    except msgspec.DecodeError:
        return None


def _check_version(version: int, name: str) -> None:
    if version not in KNOWN_VERSIONS:
        raise UnknownVersion(f"an envelope of the {name} topic at version {version}; this worker reads versions "
                             f"{', '.join(map(str, KNOWN_VERSIONS))}. A newer version of the app most likely wrote "
                             f"it (a rolling upgrade): upgrade this worker")


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
