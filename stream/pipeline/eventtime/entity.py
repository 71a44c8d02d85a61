"""An entity partition's progress: what it hears (input and peer progress) and what it reports.

It reports a watermark to the cell stage, after the cell deltas it covers, and its own input progress to the other
entity partitions, after the lead values it sends them: a peer's windows must not close before a lead value for
one of its visitors is in. Waiting stage changes hold both reports back (see ``LeadFunnel.expire_waiting``).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.events import Reason
from stream.core.timeutil import format_rfc3339
from stream.pipeline.entities.batch import EntityBatch
from stream.pipeline.entities.config import EntityConfig
from stream.pipeline.eventtime.join import WatermarkJoin, persist_join, restore_join
from stream.pipeline.eventtime.sources import HOLD
from stream.pipeline.state import Store
from stream.pipeline.wire import (
    PEER_PREFIX,
    CellEnvelope,
    EntityEnvelope,
    PeerProgress,
    RoutedEvent,
    chunked,
)

CELL_ENVELOPE_ITEMS = 1000  # cell deltas per message (a few hundred bytes each: counted, not measured)


def peer_name(partition: int) -> str:
    """An entity partition's name in the join of the progress the others report (stored with the join, so fixed;
    earlier versions also sent it on the wire)."""
    return f"{PEER_PREFIX}{partition}"


@dataclass(slots=True)
class PartitionProgress:
    """The progress an entity partition has heard, and what it last reported."""

    join: WatermarkJoin  # over every input partition
    peers: WatermarkJoin  # over the other entity partitions, which send this one lead values
    calendar: str  # the reporting calendar the partition's windows are laid out in (``Calendar.identity``)
    last_sent_watermark: int | None = None
    last_peer_report: int | None = None
    last_sent_at: int | None = None  # when every cell partition was last sent the watermark (processing time)

    @staticmethod
    def restore(table: Store, partition: int, config: EntityConfig) -> PartitionProgress:
        """The partition's progress as last persisted (reports not yet sent by this worker)."""
        peers = frozenset(peer_name(other) for other in range(config.partitions) if other != partition)
        calendar = config.windows.calendar.identity
        return PartitionProgress(restore_join(table, partition, config.sources,
                                              idle_timeout_ms=config.idle_partition_timeout_ms, calendar=calendar),
                                 restore_join(table, partition, peers, "peers"), calendar)

    def own(self) -> int | None:
        """The partition's own input watermark."""
        return self.join.watermark()

    def combined(self) -> int | None:
        """The input watermark, held back until every peer that may send lead values has reported as far."""
        own = self.join.watermark()
        if not self.peers.expected:
            return own
        peers = self.peers.watermark()
        if own is None or peers is None:
            return None
        return min(own, peers)

    def hear(self, batch: EntityBatch, partition: int, envelope: EntityEnvelope, now_ms: int) -> None:
        """Take in the progress an envelope carries (after its events), persisting the joins it moves."""
        if self.join.update(envelope.progress, now_ms):
            persist_join(batch.progress, partition, self.join, calendar=self.calendar)
        peer = envelope.peer
        if peer is not None and self.peers.update({peer_name(peer.partition): peer.progress}, now_ms):
            persist_join(batch.progress, partition, self.peers, "peers")

    def cell_envelopes(self, batch: EntityBatch, partition: int, partitions: int, watermark: int | None,
                       hold: int | None, now_ms: int, every_ms: int) -> dict[int, list[bytes]]:
        """The batch's cell deltas per cell partition, then the watermark; to every partition when it moved, or
        when ``every_ms`` (if not 0) has passed since it last went to every partition."""
        # No watermark yet holds the cell stage back (HOLD), where None would leave this partition out.
        reported = HOLD if watermark is None else watermark if hold is None else min(watermark, hold)
        previous = HOLD if self.last_sent_watermark is None else self.last_sent_watermark
        if partition in batch.lead_values:
            # Lead values for visitors of this same partition come back through the entity topic, to a later
            # batch; until then the windows they credit must stay open (a stage change that waited for its lead
            # held them, and applying it released the hold), so the report stays where it was.
            reported = min(reported, previous)
        send_watermark = reported != self.last_sent_watermark or (
            every_ms > 0 and (self.last_sent_at is None or now_ms - self.last_sent_at >= every_ms))
        if send_watermark:
            self.last_sent_at = now_ms
        targets = range(partitions) if send_watermark else batch.deltas.keys()
        envelopes = {}
        for cell_partition in targets:
            # Messages stay far below the broker's size limit; only the last one moves the watermark on.
            envelopes[cell_partition] = [
                CellEnvelope(partition, chunk, reported if last else previous).encode()
                for last, chunk in chunked(batch.deltas.get(cell_partition, []), CELL_ENVELOPE_ITEMS)]
        self.last_sent_watermark = reported
        return envelopes

    def peer_envelopes(self, batch: EntityBatch, partition: int, partitions: int,
                       hold: int | None) -> dict[int, bytes]:
        """The batch's lead values per entity partition, then this partition's own progress (to the others)."""
        # Tell the other entity partitions how far the inputs are processed here, after the lead values this
        # batch sends them: none of them may let a window close before those values are in.
        own = self.join.watermark()
        report = HOLD if own is None else own if hold is None else min(own, hold)
        lead_values = batch.lead_values
        envelopes = {}
        for other in range(partitions):
            if other != partition and (other in lead_values or report != self.last_peer_report):
                envelopes[other] = EntityEnvelope(lead_values.get(other, []), {},
                                                  PeerProgress(partition, report)).encode()
        if partition in lead_values:
            envelopes[partition] = EntityEnvelope(lead_values[partition], {}).encode()
        self.last_peer_report = report
        return envelopes


def reject_late(batch: EntityBatch, event: RoutedEvent, own: int | None, config: EntityConfig,
                now_ms: int) -> None:
    """Dead-letter an event that came too late."""
    detail = (f"event time {format_rfc3339(event.ts)} is in a window already closed by the watermark "
              f"{format_rfc3339(own or 0)} (allowed lateness {config.allowed_lateness_ms} ms)")
    batch.reject((event.topic, event.partition, event.offset), Reason.LATE, detail, event.raw, now_ms)
