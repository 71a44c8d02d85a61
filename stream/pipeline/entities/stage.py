"""Stage 2: per-entity state. Deduplicates, rejects late events, keeps lead funnel state, emits cell deltas."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stream.core.cells import deltas_for_spend
from stream.core.events import Kind
from stream.pipeline.entities.batch import EntityBatch, EntityOutput
from stream.pipeline.entities.config import EntityConfig
from stream.pipeline.entities.dedup import Dedup, ExpiryIndex, seen_entry
from stream.pipeline.entities.leads import LeadFunnel, has_waiting_changes, store_leads
from stream.pipeline.entities.visitors import VisitorTouches, store_visitors
from stream.pipeline.eventtime.closing import is_late
from stream.pipeline.eventtime.entity import PartitionProgress, reject_late
from stream.pipeline.keys import LEAD_PREFIX, SEEN_PREFIX, lead_partition
from stream.pipeline.partitions import OwnedIndexes
from stream.pipeline.state import Store
from stream.pipeline.wire import EntityEnvelope, LeadValue, RoutedEvent, WireRefused


@dataclass(slots=True)
class _PartitionIndex:
    """In-memory indexes of one owned partition, rebuilt from the table after (re)assignment."""

    progress: PartitionProgress
    waiting_leads: set[bytes] = field(default_factory=set)  # keys of leads with stage changes waiting for them
    # Per waiting lead: its earliest waiting change's time and the hold it gives (see LeadFunnel.expire_waiting).
    waiting_known: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    seen_by_time: ExpiryIndex = field(default_factory=ExpiryIndex)  # kept event ids, to forget them in time


class EntityStage:
    """Owns the entity table of the entity partitions assigned to this worker.

    One table holds leads, visitors, the event ids kept for deduplication and each partition's watermark, so
    all of a batch's writes go to one changelog partition, in order: event ids after the state changes they
    caused, so that a restart never finds an id without its effect.
    """

    def __init__(self, config: EntityConfig, table: Store) -> None:
        self.config = config
        self._table = table
        self._owned: OwnedIndexes[_PartitionIndex] = OwnedIndexes()
        self._dedup = Dedup(config.dedup_retention_ms)
        self._funnel = LeadFunnel(config)
        self._visitors = VisitorTouches(config)

    def assign(self, partitions: Iterable[int]) -> None:
        """Note the partitions this worker now owns: the first batch after it indexes them all in one scan."""
        self._owned.assign(partitions)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the indexes of partitions no longer owned."""
        self._owned.forget(partitions)

    def pending_count(self) -> int:
        """Leads holding stage changes that wait for their lead, over owned partitions."""
        return sum(len(index.waiting_leads) for index in self._owned.values())

    def process(self, partition: int, envelopes: list[tuple[int, bytes]], now_ms: int) -> EntityOutput:
        """Process the envelopes read from one entity partition, in offset order."""
        index = self._partition_index(partition)
        progress = index.progress
        batch = EntityBatch(self._table, self.config.partitions)
        for offset, raw_envelope in envelopes:
            try:
                envelope = EntityEnvelope.decode(raw_envelope)
            except WireRefused as refused:  # stops the worker (see stream.pipeline.wire): say which message
                raise refused.at(f"entity partition {partition}, offset {offset}") from refused
            self._take_events(batch, index, partition, envelope, now_ms)
            batch.end_envelope(offset)
            progress.hear(batch, partition, envelope, now_ms)
        watermark = progress.combined()
        hold = None
        if watermark is not None:
            hold = self._funnel.expire_waiting(batch, index.waiting_leads, watermark, now_ms, index.waiting_known)
            self._dedup.forget_old(batch, index.seen_by_time, watermark)
        else:
            for key in batch.leads:  # changed without being judged: judged from their state next time
                index.waiting_known.pop(key, None)
        store_leads(batch)
        store_visitors(batch)
        out = batch.output()
        out.watermark = watermark
        out.envelopes = progress.cell_envelopes(batch, partition, self.config.partitions, watermark, hold, now_ms,
                                                self.config.cell_report_interval_ms)
        out.reroutes = progress.peer_envelopes(batch, partition, self.config.partitions, hold)
        return out

    def _take_events(self, batch: EntityBatch, index: _PartitionIndex, partition: int, envelope: EntityEnvelope,
                     now_ms: int) -> None:
        """Apply an envelope's items in order: lead values from peers, then input events, each deduplicated and
        judged late or not first.

        The page-view path is written out here, not in a method of its own: the two calls it took more per view
        cost 1,100 of the 170,000 instructions an event took in this stage (callgrind, 4,000 generated events).
        """
        cfg = self.config
        visitors = self._visitors
        watermark = index.progress.combined()
        # Lateness is judged by this partition's own input progress, not by the combined watermark (lower
        # while a peer lags): the progress reported to the peers is the own one, so an event accepted here
        # must not be late by it, or a peer could close its window before the lead value sent with it came.
        own = index.progress.own()
        for item in envelope.events:
            if isinstance(item, LeadValue):
                # From this stage itself, already accepted where the lead lives: not an input event.
                visitors.take_lead_value(batch, item, watermark)
                continue
            late = is_late(item.ts, own, cfg.windows, cfg.allowed_lateness_ms)
            if item.kind == Kind.PAGE_VIEW:
                # Page views (most of the traffic) are deduplicated against the visitor's own touches, which
                # keep their event ids: one state record per visitor instead of one dedup record per view.
                visitor = visitors.load(batch, item.key, watermark)
                if visitor.has_touch(item.event_id):
                    batch.counts.duplicate[item.topic] += 1
                elif late:
                    reject_late(batch, item, own, cfg, now_ms)
                else:
                    batch.counts.valid[item.topic] += 1
                    visitors.view(batch, visitor, item)
            elif self._dedup.is_duplicate(batch, item):
                batch.counts.duplicate[item.topic] += 1
            elif late:
                reject_late(batch, item, own, cfg, now_ms)
            else:
                self._dedup.remember(batch, index.seen_by_time, item, partition)
                self._apply(batch, index, item)

    def _apply(self, batch: EntityBatch, index: _PartitionIndex, event: RoutedEvent) -> None:
        """Apply a new, timely event: spend goes straight to its cells, the rest to its lead."""
        if event.kind == Kind.SPEND:
            attrs = event.attrs
            batch.counts.valid[event.topic] += 1
            batch.counts.spend_micros[(attrs["channel"], attrs["campaign"])] += attrs["amount"]
            batch.add_deltas(deltas_for_spend(event.ts, attrs["channel"], attrs["campaign"], attrs["amount"],
                                              self.config.windows))
        else:
            self._funnel.apply(batch, index.waiting_leads, event)

    def _partition_index(self, partition: int) -> _PartitionIndex:
        """The partition's indexes, rebuilt the first time after an assignment from one scan of the table, which
        also indexes every other owned partition not indexed yet (their keys change only through their own
        batches, which come after)."""
        index = self._owned.get(partition)
        if index is not None:
            return index
        wanted = {p: _PartitionIndex(PartitionProgress.restore(self._table, p, self.config))
                  for p in self._owned.unindexed(partition)}
        partitions = self.config.partitions
        for key, value in self._table.items():
            if key.startswith(LEAD_PREFIX):
                if has_waiting_changes(value):
                    owner = wanted.get(lead_partition(key, partitions))
                    if owner is not None:
                        owner.waiting_leads.add(key)
            elif key.startswith(SEEN_PREFIX):
                ts, seen_by = seen_entry(value)
                owner = wanted.get(seen_by)
                if owner is not None:
                    owner.seen_by_time.add(ts, key)
        self._owned.add(wanted)
        return wanted[partition]
