"""Stage 2: per-entity state. Deduplicates, rejects late events, keeps lead funnel state, emits cell deltas."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    to_doc,
)
from stream.core.timeutil import earliest_window_end, format_rfc3339
from stream.core.watermark import HOLD, WatermarkJoin, is_closed
from stream.pipeline.counts import BatchCounts
from stream.pipeline.routing import partition_for, position
from stream.pipeline.state import BatchWrites, Store, persist_join, restore_join

_LEAD_PREFIX = b"l:"


@dataclass(slots=True)
class EntityOutput:
    """One batch's results: cell-delta envelopes per cell partition, dead letters, writes per table."""

    envelopes: dict[int, bytes] = field(default_factory=dict)
    dead_letters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lead_writes: dict[bytes, bytes | None] = field(default_factory=dict)
    seen_writes: dict[bytes, bytes | None] = field(default_factory=dict)
    counts: BatchCounts = field(default_factory=BatchCounts)
    watermark: int | None = None


@dataclass(slots=True)
class _PartitionIndex:
    """In-memory indexes of one owned partition, rebuilt from the tables after (re)assignment."""

    join: WatermarkJoin
    pending_leads: set[bytes] = field(default_factory=set)
    seen_by_time: list[tuple[int, bytes]] = field(default_factory=list)  # heap
    last_sent_watermark: int | None = None


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


def lead_key(lead_id: str) -> bytes:
    """Key of a lead in the lead table."""
    return _LEAD_PREFIX + lead_id.encode("utf-8")


def seen_key(kind: str, event_id: str) -> bytes:
    """Key of an event id in the dedup table (ids are unique per topic)."""
    return kind.encode("utf-8") + b"\x00" + event_id.encode("utf-8")


class EntityStage:
    """Owns the lead and dedup tables of the entity partitions assigned to this worker."""

    def __init__(self, config: EntityConfig, leads: Store, seen: Store) -> None:
        self.config = config
        self._leads = leads
        self._seen = seen
        self._index: dict[int, _PartitionIndex] = {}

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
        index = _PartitionIndex(restore_join(self._leads, partition, self.config.sources))
        for key, value in self._leads.items():
            if key.startswith(_LEAD_PREFIX) and b'"pe"' in value and self._owns(key[2:], partition):
                index.pending_leads.add(key)
        for key, value in self._seen.items():
            ts, owner = orjson.loads(value)
            if owner == partition:
                index.seen_by_time.append((ts, key))
        heapq.heapify(index.seen_by_time)
        self._index[partition] = index
        return index

    def _owns(self, lead_id: bytes, partition: int) -> bool:
        return partition_for(lead_id.decode("utf-8"), self.config.partitions) == partition

    def process(self, partition: int, envelopes: list[tuple[int, bytes]], now_ms: int) -> EntityOutput:
        """Process the envelopes read from one entity partition, in offset order."""
        cfg = self.config
        index = self._partition_index(partition)
        leads, seen = BatchWrites(self._leads), BatchWrites(self._seen)
        out = EntityOutput()
        deltas: dict[int, list[list[Any]]] = {}
        cache: dict[bytes, LeadState] = {}
        for offset, raw_envelope in envelopes:
            envelope = orjson.loads(raw_envelope)
            watermark = index.join.watermark()
            for slot, item in enumerate(envelope["ev"]):
                kind, event_id, ts, key, attrs, topic, source_partition, source_offset, raw = item
                dedup = seen_key(kind, event_id)
                if seen.get(dedup) is not None:
                    out.counts.duplicate[topic] += 1
                    continue
                if is_closed(earliest_window_end(ts, cfg.window_sizes_ms), watermark, cfg.allowed_lateness_ms):
                    out.counts.rejected[(topic, str(Reason.LATE))] += 1
                    detail = (f"event time {format_rfc3339(ts)} is in a window already closed by the watermark "
                              f"{format_rfc3339(watermark or 0)} (allowed lateness {cfg.allowed_lateness_ms} ms)")
                    out.dead_letters.append((dead_letter_key(topic, source_partition, source_offset), dead_letter(
                        topic, source_partition, source_offset, Reason.LATE, detail, raw, None, now_ms)))
                    continue
                seen.set(dedup, orjson.dumps([ts, partition]))
                heapq.heappush(index.seen_by_time, (ts, dedup))
                where = position(offset, slot)
                if kind == Kind.SPEND:
                    out.counts.valid[topic] += 1
                    out.counts.spend_micros[(attrs["channel"], attrs["campaign"])] += attrs["amount"]
                    self._route(deltas, where, deltas_for_spend(ts, attrs["channel"], attrs["campaign"],
                                                                attrs["amount"], cfg.window_sizes_ms))
                elif kind == Kind.PAGE_VIEW:
                    out.counts.valid[topic] += 1
                else:
                    change = None
                    if kind == Kind.STAGE_CHANGE:
                        change = PendingChange(event_id, ts, attrs["stage"], attrs["amount"],
                                               (topic, source_partition, source_offset), raw)
                    self._apply_lead_event(index, leads, cache, lead_key(key), kind, topic, ts, attrs, change,
                                           where, deltas, out.counts)
            if index.join.update(envelope["wm"]):
                persist_join(leads, partition, index.join)
        watermark = index.join.watermark()
        if watermark is not None:
            self._expire(index, partition, watermark, leads, seen, cache, out, now_ms)
        for key, state in cache.items():
            leads.set(key, orjson.dumps(to_doc(state)) if state.arrived or state.pending else None)
        out.watermark = watermark
        # No watermark yet holds the cell stage back (HOLD), where None would leave this partition out.
        reported = HOLD if watermark is None else watermark
        send_watermark = reported != index.last_sent_watermark
        targets = range(cfg.partitions) if send_watermark else deltas.keys()
        for cell_partition in targets:
            out.envelopes[cell_partition] = orjson.dumps(
                {"src": partition, "d": deltas.get(cell_partition, []), "wm": reported})
        index.last_sent_watermark = reported
        out.lead_writes = leads.take()
        out.seen_writes = seen.take()
        return out

    def _route(self, deltas: dict[int, list[list[Any]]], where: int, changes: dict[CellId, CellDelta]) -> None:
        for cell, delta in changes.items():
            target = partition_for(cell.routing_key(), self.config.partitions)
            deltas.setdefault(target, []).append([list(cell), where, delta.to_doc()])

    def _apply_lead_event(
        self, index: _PartitionIndex, leads: BatchWrites, cache: dict[bytes, LeadState], key: bytes, kind: str,
        topic: str, ts: int, attrs: dict[str, Any], change: PendingChange | None, where: int,
        deltas: dict[int, list[list[Any]]], counts: BatchCounts,
    ) -> None:
        state = cache.get(key)
        if state is None:
            stored = leads.get(key)
            state = from_doc(orjson.loads(stored)) if stored is not None else LeadState()
            cache[key] = state
        funnel = self.config.funnel
        before, before_attr, before_entries = facts(state, funnel), state.attribution(), entry_times(state, funnel)
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
        after, after_attr = facts(state, funnel), state.attribution()
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
            self._route(deltas, where, deltas_for_facts(changes, self.config.window_sizes_ms))

    def _expire(
        self, index: _PartitionIndex, partition: int, watermark: int, leads: BatchWrites, seen: BatchWrites,
        cache: dict[bytes, LeadState], out: EntityOutput, now_ms: int,
    ) -> None:
        cfg = self.config
        cutoff = watermark - cfg.unknown_lead_timeout_ms
        for key in list(index.pending_leads):
            state = cache.get(key)
            if state is None:
                stored = leads.get(key)
                if stored is None:
                    index.pending_leads.discard(key)
                    continue
                state = from_doc(orjson.loads(stored))
            if not any(change.ts < cutoff for change in state.pending):
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
        horizon = watermark - cfg.dedup_retention_ms
        heap = index.seen_by_time
        while heap and heap[0][0] < horizon:
            _, key = heapq.heappop(heap)
            seen.set(key, None)

