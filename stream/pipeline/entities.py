"""Stage 2: per-entity state. Deduplicates, rejects late events, keeps lead funnel state, emits cell deltas."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.core import jsonbytes
from stream.core.cells import CellDelta, CellId, deltas_for_facts, deltas_for_spend
from stream.core.deadletter import dead_letter, dead_letter_key
from stream.core.events import Kind, Reason
from stream.core.funnel import (
    LeadState,
    PendingChange,
    apply_lead,
    apply_stage_change,
    entry_times,
    expire_pending,
    fact_changes,
    facts,
    from_doc,
    lead_value,
    to_doc,
)
from stream.core.timeutil import earliest_window_end, format_rfc3339
from stream.core.visitors import (
    AttributionConfig,
    VisitorState,
    attribution_deltas,
    attribution_facts,
    forget_closed_windows,
    view,
)
from stream.core.visitors import from_doc as visitor_from_doc
from stream.core.visitors import to_doc as visitor_doc
from stream.core.watermark import HOLD, WatermarkJoin, is_closed
from stream.pipeline.counts import BatchCounts
from stream.pipeline.keys import LEAD_PREFIX, SEEN_PREFIX, lead_key, owns_lead, seen_key, visitor_key
from stream.pipeline.routing import partition_for
from stream.pipeline.state import BatchWrites, Store, persist_join, restore_join
from stream.pipeline.wire import CellDeltaItem, CellEnvelope, EntityEnvelope, LeadValue, PeerProgress, chunked

CELL_ENVELOPE_ITEMS = 1000  # cell deltas per message (a few hundred bytes each)


def peer_name(partition: int) -> str:
    """An entity partition's name in the join of the progress the others report (stored with the join, so fixed)."""
    return f"@entities:{partition}"


def combined_watermark(index: _PartitionIndex) -> int | None:
    """The input watermark, held back until every peer that may send lead values has reported as far."""
    own = index.join.watermark()
    if not index.peers.expected:
        return own
    peers = index.peers.watermark()
    if own is None or peers is None:
        return None
    return min(own, peers)


@dataclass(slots=True)
class EntityOutput:
    """One batch's results: cell-delta envelopes per cell partition, dead letters, writes per table."""

    envelopes: dict[int, list[bytes]] = field(default_factory=dict)
    dead_letters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reroutes: dict[int, bytes] = field(default_factory=dict)  # envelopes for other entity partitions
    # Writes to the entity table, in the order they must reach its changelog (see EntityStage).
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    counts: BatchCounts = field(default_factory=BatchCounts)
    watermark: int | None = None


# Event ids kept for deduplication are forgotten by the minute of their event time.
EXPIRY_BUCKET_MS = 60_000


@dataclass(slots=True)
class ExpiryIndex:
    """Keys grouped by the minute of their event time, to forget them once a horizon has passed that minute.

    A list slot per key (the key object is the table's own) instead of a (time, key) tuple in a heap: about
    90 bytes less per kept event id, 35 MB for the 400,000 ids of a lead-heavy million events.
    """

    buckets: dict[int, list[bytes]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # heap of the bucket numbers in ``buckets``

    def add(self, ts: int, key: bytes) -> None:
        """Remember ``key`` under the minute of ``ts``."""
        bucket = ts // EXPIRY_BUCKET_MS
        keys = self.buckets.get(bucket)
        if keys is None:
            self.buckets[bucket] = keys = []
            heapq.heappush(self.order, bucket)
        keys.append(key)

    def expire(self, horizon: int) -> list[bytes]:
        """Forget and return the keys of every minute that ended at or before ``horizon``."""
        expired: list[bytes] = []
        while self.order and (self.order[0] + 1) * EXPIRY_BUCKET_MS <= horizon:
            expired += self.buckets.pop(heapq.heappop(self.order))
        return expired


class SeenValues:
    """What a kept event id stores: the start of its event time's minute and its partition, one object per pair.

    The minute is all the expiry index takes of an event time (``EXPIRY_BUCKET_MS``), so the ids of one minute and
    partition share one value, where each had one of its own: about 23 MB for the 400,000 ids of a lead-heavy
    million events. Values stored before (the event time itself) restore to the same minute.
    """

    LIMIT = 1 << 16  # pairs remembered; past it the cache starts again (values stay correct, only shared less)

    def __init__(self) -> None:
        self._values: dict[tuple[int, int], bytes] = {}

    def __call__(self, ts: int, partition: int) -> bytes:
        minute = ts - ts % EXPIRY_BUCKET_MS
        value = self._values.get((minute, partition))
        if value is None:
            if len(self._values) >= self.LIMIT:
                self._values.clear()
            value = self._values[(minute, partition)] = jsonbytes.dumps([minute, partition])
        return value


@dataclass(slots=True)
class _PartitionIndex:
    """In-memory indexes of one owned partition, rebuilt from the tables after (re)assignment."""

    join: WatermarkJoin  # over every input partition
    peers: WatermarkJoin  # over the other entity partitions, which send this one lead values
    pending_leads: set[bytes] = field(default_factory=set)
    seen_by_time: ExpiryIndex = field(default_factory=ExpiryIndex)
    last_sent_watermark: int | None = None
    last_peer_report: int | None = None


@dataclass(frozen=True, slots=True)
class EntityConfig:
    """What the entity stage needs from the settings."""

    partitions: int
    sources: frozenset[str]
    window_sizes_ms: tuple[int, ...]
    allowed_lateness_ms: int
    funnel: tuple[str, ...]
    dedup_retention_ms: int
    unknown_lead_timeout_ms: int
    cohort_window_ms: int = 90 * 86_400_000
    attribution: AttributionConfig = AttributionConfig(90 * 86_400_000, 7 * 86_400_000, 100)


class EntityStage:
    """Owns the entity table of the entity partitions assigned to this worker.

    One table holds leads, visitors, the event ids kept for deduplication and each partition's watermark, so
    all of a batch's writes go to one changelog partition, in order: event ids after the state changes they
    caused, so that a restart never finds an id without its effect.
    """

    def __init__(self, config: EntityConfig, table: Store) -> None:
        self.config = config
        self._table = table
        self._index: dict[int, _PartitionIndex] = {}
        self._seen_value = SeenValues()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the indexes of partitions no longer owned."""
        for partition in partitions:
            self._index.pop(partition, None)

    def pending_count(self) -> int:
        """Leads holding stage changes that wait for their lead, over owned partitions."""
        return sum(len(index.pending_leads) for index in self._index.values())

    def _partition_index(self, partition: int) -> _PartitionIndex:
        index = self._index.get(partition)
        if index is not None:
            return index
        peers = frozenset(peer_name(other) for other in range(self.config.partitions) if other != partition)
        index = _PartitionIndex(restore_join(self._table, partition, self.config.sources),
                                restore_join(self._table, partition, peers, "peers"))
        for key, value in self._table.items():
            if key.startswith(LEAD_PREFIX):
                if b'"pe"' in value and owns_lead(key, partition, self.config.partitions):
                    index.pending_leads.add(key)
            elif key.startswith(SEEN_PREFIX):
                ts, owner = orjson.loads(value)
                if owner == partition:
                    index.seen_by_time.add(ts, key)
        self._index[partition] = index
        return index

    def process(self, partition: int, envelopes: list[tuple[int, bytes]], now_ms: int) -> EntityOutput:
        """Process the envelopes read from one entity partition, in offset order."""
        cfg = self.config
        index = self._partition_index(partition)
        leads, seen, progress = BatchWrites(self._table), BatchWrites(self._table), BatchWrites(self._table)
        out = EntityOutput()
        deltas: dict[int, list[CellDeltaItem]] = {}
        cache: dict[bytes, LeadState] = {}
        visitors: dict[bytes, VisitorState] = {}
        reroutes: dict[int, list[LeadValue]] = {}
        pending: dict[CellId, CellDelta] = {}
        for offset, raw_envelope in envelopes:
            envelope = EntityEnvelope.decode(raw_envelope)
            watermark = combined_watermark(index)
            # Lateness is judged by this partition's own input progress, not by the combined watermark (lower
            # while a peer lags): the progress reported to the peers is the own one, so an event accepted here
            # must not be late by it, or a peer could close its window before the lead value sent with it came.
            own = index.join.watermark()
            for item in envelope.events:
                if isinstance(item, LeadValue):
                    # From this stage itself, already accepted where the lead lives: not an input event.
                    visitor = self._visitor(leads, visitors, item.visitor, watermark)
                    before = attribution_facts(visitor, cfg.attribution)
                    if item.value is None:
                        visitor.leads.pop(item.lead, None)
                    else:
                        visitor.leads[item.lead] = item.value
                    self._route(pending, attribution_deltas(
                        before, attribution_facts(visitor, cfg.attribution), cfg.window_sizes_ms))
                    continue
                kind, event_id, ts, key, attrs, topic, source_partition, source_offset, raw = item
                late = is_closed(earliest_window_end(ts, cfg.window_sizes_ms), own, cfg.allowed_lateness_ms)
                if kind == Kind.PAGE_VIEW:
                    # Page views (most of the traffic) are deduplicated against the visitor's own touches, which
                    # keep their event ids: one state record per visitor instead of one dedup record per view.
                    visitor = self._visitor(leads, visitors, key, watermark)
                    if visitor.has_touch(event_id):
                        out.counts.duplicate[topic] += 1
                    elif late:
                        self._reject_late(out, topic, source_partition, source_offset, ts, own, raw, now_ms)
                    else:
                        out.counts.valid[topic] += 1
                        self._view(visitor, ts, attrs, event_id, pending)
                    continue
                dedup = seen_key(kind, event_id)
                if seen.get(dedup) is not None:
                    out.counts.duplicate[topic] += 1
                    continue
                if late:
                    self._reject_late(out, topic, source_partition, source_offset, ts, own, raw, now_ms)
                    continue
                seen.set(dedup, self._seen_value(ts, partition))
                index.seen_by_time.add(ts, dedup)
                if kind == Kind.SPEND:
                    out.counts.valid[topic] += 1
                    out.counts.spend_micros[(attrs["channel"], attrs["campaign"])] += attrs["amount"]
                    self._route(pending, deltas_for_spend(ts, attrs["channel"], attrs["campaign"],
                                                                attrs["amount"], cfg.window_sizes_ms))
                else:
                    change = None
                    if kind == Kind.STAGE_CHANGE:
                        change = PendingChange(event_id, ts, attrs["stage"], attrs["amount"],
                                               (topic, source_partition, source_offset), raw, attrs.get("owner"))
                    self._apply_lead_event(index, leads, cache, key, kind, topic, ts, attrs, change,
                                           pending, out, reroutes)
            self._flush(deltas, pending, offset)
            if index.join.update(envelope.progress):
                persist_join(progress, partition, index.join)
            peer = envelope.peer
            if peer is not None and index.peers.update({peer_name(peer.partition): peer.progress}):
                persist_join(progress, partition, index.peers, "peers")
        watermark = combined_watermark(index)
        hold = None
        if watermark is not None:
            hold = self._expire(index, partition, watermark, leads, seen, cache, out, now_ms)
        for stored_key, state in cache.items():
            leads.set(stored_key, jsonbytes.dumps(to_doc(state)) if state.arrived or state.pending else None)
        for stored_key, visitor in visitors.items():
            leads.set(stored_key, None if visitor.is_empty() else jsonbytes.dumps(visitor_doc(visitor)))
        out.watermark = watermark
        # No watermark yet holds the cell stage back (HOLD), where None would leave this partition out.
        reported = HOLD if watermark is None else watermark if hold is None else min(watermark, hold)
        previous = HOLD if index.last_sent_watermark is None else index.last_sent_watermark
        if partition in reroutes:
            # Lead values for visitors of this same partition come back through the entity topic, to a later
            # batch; until then the windows they credit must stay open (a stage change that waited for its lead
            # held them, and applying it released the hold), so the report stays where it was.
            reported = min(reported, previous)
        send_watermark = reported != index.last_sent_watermark
        targets = range(cfg.partitions) if send_watermark else deltas.keys()
        for cell_partition in targets:
            # Messages stay far below the broker's size limit; only the last one moves the watermark on.
            out.envelopes[cell_partition] = [
                CellEnvelope(partition, chunk, reported if last else previous).encode()
                for last, chunk in chunked(deltas.get(cell_partition, []), CELL_ENVELOPE_ITEMS, _one)]
        index.last_sent_watermark = reported
        # Tell the other entity partitions how far the inputs are processed here, after the lead values this
        # batch sends them: none of them may let a window close before those values are in (see peer_name).
        own = index.join.watermark()
        peer_report = HOLD if own is None else own if hold is None else min(own, hold)
        for other in range(cfg.partitions):
            if other != partition and (other in reroutes or peer_report != index.last_peer_report):
                out.reroutes[other] = EntityEnvelope(reroutes.get(other, []), {},
                                                     PeerProgress(partition, peer_report)).encode()
        for other, items in reroutes.items():
            if other == partition:
                out.reroutes[other] = EntityEnvelope(items, {}).encode()
        index.last_peer_report = peer_report
        # State first, then the event ids it took in, then the watermarks: the changelog keeps this order, so a
        # restart that finds an event id finds its effect on the state too (a crash in between is replayed: the
        # ids already written are counted as duplicates, and applying an event to a state that has it already
        # changes nothing), and a restart never judges a replayed event by a watermark its state had not reached.
        out.writes = {**leads.take(), **seen.take(), **progress.take()}
        return out

    def _reject_late(self, out: EntityOutput, topic: str, partition: int, offset: int, ts: int,
                     watermark: int | None, raw: str, now_ms: int) -> None:
        out.counts.rejected[(topic, str(Reason.LATE))] += 1
        detail = (f"event time {format_rfc3339(ts)} is in a window already closed by the watermark "
                  f"{format_rfc3339(watermark or 0)} (allowed lateness {self.config.allowed_lateness_ms} ms)")
        out.dead_letters.append((dead_letter_key(topic, partition, offset), dead_letter(
            topic, partition, offset, Reason.LATE, detail, raw, None, now_ms)))

    def _view(self, visitor: VisitorState, ts: int, attrs: dict[str, Any], event_id: str,
              pending: dict[CellId, CellDelta]) -> None:
        """A page view's traffic counts, and any change it makes to the credit of the visitor's leads."""
        cfg = self.config
        credited = attribution_facts(visitor, cfg.attribution) if visitor.leads else None
        view(visitor, ts, attrs["channel"], attrs["campaign"], attrs["url"], cfg.window_sizes_ms,
             cfg.attribution.touch_limit, event_id, pending)
        if credited is not None:
            self._route(pending, attribution_deltas(credited, attribution_facts(visitor, cfg.attribution),
                                                    cfg.window_sizes_ms))

    @staticmethod
    def _route(pending: dict[CellId, CellDelta], changes: dict[CellId, CellDelta]) -> None:
        """Merge changes into the envelope's pending deltas (one per cell per envelope)."""
        for cell, delta in changes.items():
            known = pending.get(cell)
            if known is None:
                pending[cell] = delta
            else:
                known.merge(delta)

    def _flush(self, deltas: dict[int, list[CellDeltaItem]], pending: dict[CellId, CellDelta], offset: int) -> None:
        """One delta per cell per envelope, at the envelope's offset (its position in this partition).

        An envelope is a fixed message, so a replay recomputes the same (or, where state was already persisted,
        a smaller) delta at the same position, which the cell stage recognises and skips.
        """
        where = offset
        for cell, delta in pending.items():
            if not delta.is_empty():
                target = partition_for(cell.routing_key(), self.config.partitions)
                deltas.setdefault(target, []).append(CellDeltaItem(cell, where, delta.to_doc()))
        pending.clear()

    def _visitor(self, table: BatchWrites, visitors: dict[bytes, VisitorState], visitor_id: str,
                 watermark: int | None) -> VisitorState:
        key = visitor_key(visitor_id)
        visitor = visitors.get(key)
        if visitor is None:
            stored = table.get(key)
            visitor = visitor_from_doc(orjson.loads(stored)) if stored is not None else VisitorState()
            visitors[key] = visitor
            if watermark is not None:
                forget_closed_windows(visitor, watermark - self.config.allowed_lateness_ms)
        return visitor

    def _apply_lead_event(
        self, index: _PartitionIndex, leads: BatchWrites, cache: dict[bytes, LeadState], lead_id: str, kind: str,
        topic: str, ts: int, attrs: dict[str, Any], change: PendingChange | None,
        pending: dict[CellId, CellDelta], out: EntityOutput, reroutes: dict[int, list[LeadValue]],
    ) -> None:
        counts = out.counts
        key = lead_key(lead_id)
        state = cache.get(key)
        if state is None:
            stored = leads.get(key)
            state = from_doc(orjson.loads(stored)) if stored is not None else LeadState()
            cache[key] = state
        funnel, window = self.config.funnel, self.config.cohort_window_ms
        before, before_attr, before_entries = facts(state, funnel, window), state.attribution(), entry_times(
            state, funnel)
        before_visitor, before_value = state.visitor, lead_value(state, funnel)
        was_arrived = state.arrived
        if change is None:
            # Stage changes that waited for this lead are counted as valid when they apply.
            waiting_topics = [pending.source[0] for pending in state.pending]
            apply_lead(state, ts, attrs)
            counts.valid[topic] += 1
            counts.valid.update(waiting_topics)
            if not was_arrived:
                counts.leads[(attrs["channel"], attrs.get("campaign"))] += 1
        elif apply_stage_change(state, change):
            counts.valid[topic] += 1
        after, after_attr = facts(state, funnel, window), state.attribution()
        after_value = lead_value(state, funnel)
        if before_visitor is not None and before_visitor != state.visitor:
            self._reroute(reroutes, before_visitor, lead_id, ts, None)
        if state.visitor is not None and after_value != before_value:
            self._reroute(reroutes, state.visitor, lead_id, ts, after_value)
        if state.pending:
            index.pending_leads.add(key)
        else:
            index.pending_leads.discard(key)
        if after_attr is not None:
            after_entries = entry_times(state, funnel)
            for stage in after_entries.keys() - before_entries.keys():
                counts.stage_entries[(stage, after_attr.channel)] += 1
        changes = fact_changes(before, before_attr, after, after_attr)
        if changes:
            self._route(pending, deltas_for_facts(changes, self.config.window_sizes_ms))

    def _reroute(self, reroutes: dict[int, list[LeadValue]], visitor: str, lead_id: str, ts: int,
                 value: dict[str, Any] | None) -> None:
        reroutes.setdefault(partition_for(visitor, self.config.partitions), []).append(
            LeadValue(lead_id, visitor, ts, value))

    def _expire(
        self, index: _PartitionIndex, partition: int, watermark: int, leads: BatchWrites, seen: BatchWrites,
        cache: dict[bytes, LeadState], out: EntityOutput, now_ms: int,
    ) -> int | None:
        """Dead-letter stage changes whose lead did not come in time, and forget old event ids.

        Returns the progress this partition may report while stage changes wait for their lead, or None when
        none waits: just short of closing the first window any of them falls in. A waiting change counts
        when its lead arrives, in the windows of its own time, so those must stay open until then (or until
        it is dead-lettered); otherwise the result would depend on whether the lead came before or after the
        window closed.
        """
        cfg = self.config
        cutoff = watermark - cfg.unknown_lead_timeout_ms
        hold: int | None = None
        for key in list(index.pending_leads):
            state = cache.get(key)
            if state is None:
                stored = leads.get(key)
                if stored is None:
                    index.pending_leads.discard(key)
                    continue
                state = from_doc(orjson.loads(stored))
            if not any(change.ts < cutoff for change in state.pending):
                hold = _earliest_close(hold, state, cfg)
                continue
            cache[key] = state
            for change in expire_pending(state, cutoff):
                topic, source_partition, source_offset = change.source
                out.counts.rejected[(topic, str(Reason.UNKNOWN_LEAD))] += 1
                detail = (f"no lead arrived within {cfg.unknown_lead_timeout_ms} ms (event time) of this stage "
                          f"change at {format_rfc3339(change.ts)}")
                out.dead_letters.append((dead_letter_key(topic, source_partition, source_offset), dead_letter(
                    topic, source_partition, source_offset, Reason.UNKNOWN_LEAD, detail, change.raw, None, now_ms)))
            if not state.pending:
                index.pending_leads.discard(key)
            else:
                hold = _earliest_close(hold, state, cfg)
        for key in index.seen_by_time.expire(watermark - cfg.dedup_retention_ms):
            seen.set(key, None)
        return hold



def _one(_: CellDeltaItem) -> int:
    return 1  # cell deltas are counted, not measured: each is a few hundred bytes


def _earliest_close(hold: int | None, state: LeadState, cfg: EntityConfig) -> int | None:
    """``hold`` lowered to just before the first window of any of the lead's waiting changes closes."""
    closes = [earliest_window_end(change.ts, cfg.window_sizes_ms) + cfg.allowed_lateness_ms - 1
              for change in state.pending]
    return min(closes + ([] if hold is None else [hold]), default=None)
