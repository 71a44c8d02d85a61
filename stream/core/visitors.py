"""Per-visitor state: touches for attribution, the leads they became, and which windows already counted them."""

from __future__ import annotations

from bisect import insort
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stream.core.attribution import LEAD_CREDIT, MODELS, AttributionFact, Touch, credit
from stream.core.cells import ASSET, ATTRIBUTION, NO_CHANNEL, TRAFFIC, CellDelta, CellId, cell_ids
from stream.core.trailing import note_visitor_day
from stream.core.windows import DAY, Windows


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    """Attribution settings."""

    lookback_ms: int
    half_life_ms: int
    touch_limit: int


@dataclass(slots=True)
class VisitorState:
    """A visitor's recent touches (capped), its leads' values, and the window buckets it was counted in."""

    touches: list[Touch] = field(default_factory=list)
    leads: dict[str, dict[str, Any]] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)
    dropped_touches: int = 0
    touch_ids: set[str] = field(init=False)  # event ids of ``touches``, derived: duplicates are checked per view

    def __post_init__(self) -> None:
        self.touch_ids = {touch.event_id for touch in self.touches}

    def has_touch(self, event_id: str) -> bool:
        """Whether a page view with this id is among the kept touches."""
        return event_id in self.touch_ids

    def is_empty(self) -> bool:
        """Nothing left worth keeping."""
        return not self.touches and not self.leads and not self.counted


def view(state: VisitorState, ts: int, channel: str | None, campaign: str | None, url: str,
         windows: Windows, touch_limit: int, event_id: str = "",
         deltas: dict[CellId, CellDelta] | None = None) -> dict[CellId, CellDelta]:
    """Record a page view: its traffic counts, first-time visitor counts, and the touch.

    The counts are added to ``deltas`` (a new dict by default), which is returned. A view already recorded
    (same event id) changes nothing: the visitor's state may have been persisted while the dedup entry of the
    same batch was not, and the view is then delivered again.
    """
    if deltas is None:
        deltas = {}
    if event_id and event_id in state.touch_ids:
        return deltas
    channel = channel or NO_CHANNEL
    counted = state.counted
    trailing = windows.longest_trailing
    for cell in cell_ids(TRAFFIC, ts, channel, None, windows):
        delta = deltas.get(cell)
        if delta is None:
            delta = deltas[cell] = CellDelta()
        delta.add("views", 1)
        scope = f"c|{cell.channel or '*'}"
        bucket = f"{cell.size}|{cell.start_ms}|{scope}"
        if bucket not in counted:
            counted.add(bucket)
            delta.add("visitors", 1)
            if trailing and cell.size == DAY:
                note_visitor_day(_days_seen(counted, scope, bucket, windows), windows.calendar.day_number(
                    cell.start_ms), cell.start_ms, trailing, partial(_traffic_cell, cell.channel), deltas)
    for size, start in windows.starts(ts):
        scope = f"u|{url}"
        bucket = f"{size}|{start}|{scope}"
        if bucket not in counted:
            counted.add(bucket)
            deltas.setdefault(CellId(ASSET, size, start, None, None, url), CellDelta()).add("visitors", 1)
            if trailing and size == DAY:
                note_visitor_day(_days_seen(counted, scope, bucket, windows), windows.calendar.day_number(start),
                                 start, trailing, partial(_asset_cell, url), deltas)
    touch = Touch(ts, channel, campaign, event_id)
    touches = state.touches
    insort(touches, touch, key=_touch_order)
    state.touch_ids.add(event_id)
    if len(touches) > touch_limit:
        # Keep the latest touches: a bot viewing a million pages cannot grow the state without bound.
        dropped = len(touches) - touch_limit
        state.dropped_touches += dropped
        for old in touches[:dropped]:
            state.touch_ids.discard(old.event_id)
        del touches[:dropped]
    return deltas


def _days_seen(counted: set[str], scope: str, new: str, windows: Windows) -> dict[int, int]:
    """The days (day number -> daily window start) a visitor was seen on in a scope, but for bucket ``new``."""
    seen: dict[int, int] = {}
    day_number = windows.calendar.day_number
    prefix, suffix = f"{DAY}|", f"|{scope}"
    # Called once per visitor, day and scope, over buckets of every size and scope: tested on the ends before a parse.
    for bucket in counted:
        if bucket.startswith(prefix) and bucket.endswith(suffix) and bucket != new:
            start = bucket[len(prefix):len(bucket) - len(suffix)]
            if start.isdigit():  # not a scope that merely ends like this one
                seen[day_number(int(start))] = int(start)
    return seen


def _traffic_cell(channel: str | None, start: int) -> CellId:
    return CellId(TRAFFIC, DAY, start, channel, None)


def _asset_cell(url: str, start: int) -> CellId:
    return CellId(ASSET, DAY, start, None, None, url)


def _touch_order(touch: Touch) -> tuple[int, str, str]:
    return touch.ts, touch.channel, touch.campaign or ""


def forget_closed_windows(state: VisitorState, closed_before: int, windows: Windows) -> None:
    """Drop window buckets that ended before ``closed_before``: no event can reach them any more."""
    keep = set()
    # A trailing window's distinct visitors need the days a visitor was seen on as far back as the longest one
    # (``stream.core.trailing``).
    days_kept = windows.day_kept_ms
    for bucket in state.counted:
        size, start, _ = bucket.split("|", 2)
        end = windows.end(int(size), int(start))
        if end > closed_before or (days_kept and int(size) == DAY and end + days_kept > closed_before):
            keep.add(bucket)
    state.counted = keep


def attribution_facts(state: VisitorState, config: AttributionConfig) -> Counter[AttributionFact]:
    """Credit for each of the visitor's leads (and their pipeline and revenue) under every model."""
    found: Counter[AttributionFact] = Counter()
    for value in state.leads.values():
        created = value["ts"]
        touches = [t for t in state.touches if created - config.lookback_ms <= t.ts <= created]
        if not touches:
            continue
        for model in MODELS:
            found.update(credit(model, touches, created, config.half_life_ms, "leads", created, LEAD_CREDIT))
            for kind in ("pipeline", "revenue"):
                if kind in value:
                    micros, at = value[kind]
                    found.update(credit(model, touches, created, config.half_life_ms, kind, at, micros))
    return found


def attribution_deltas(before: Counter[AttributionFact], after: Counter[AttributionFact],
                       windows: Windows) -> dict[CellId, CellDelta]:
    """Cell changes between two versions of a visitor's credits."""
    deltas: dict[CellId, CellDelta] = {}
    for facts, sign in ((after - before, 1), (before - after, -1)):
        for fact in facts.elements():
            for cell in cell_ids(ATTRIBUTION, fact.ts, fact.channel, fact.campaign, windows, fact.model):
                deltas.setdefault(cell, CellDelta()).add_sum(fact.kind, sign * fact.amount)
    return {cell: delta for cell, delta in deltas.items() if not delta.is_empty()}


def to_doc(state: VisitorState) -> dict[str, Any]:
    """Serialise for the entity table."""
    doc: dict[str, Any] = {"t": [[t.ts, t.channel, t.campaign, t.event_id] for t in state.touches],
                           "k": sorted(state.counted)}
    if state.leads:
        doc["l"] = state.leads
    if state.dropped_touches:
        doc["d"] = state.dropped_touches
    return doc


def from_doc(doc: dict[str, Any]) -> VisitorState:
    """Inverse of :func:`to_doc`."""
    return VisitorState([Touch(*touch) for touch in doc["t"]], dict(doc.get("l", {})), set(doc["k"]),
                        doc.get("d", 0))
