"""Stage 1: validate input messages, dead-letter bad ones, route good ones by entity with input progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.core.deadletter import dead_letter, dead_letter_key
from stream.core.events import Event, Kind, Reason, Rejection
from stream.core.timeutil import format_duration
from stream.core.validation import Validator
from stream.pipeline.counts import BatchCounts
from stream.pipeline.eventtime.sources import SourceProgress
from stream.pipeline.routing import partition_for, source_name
from stream.pipeline.wire import EntityEnvelope, RoutedEvent, chunked


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One message read from an input topic."""

    kind: Kind
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class IngestOutput:
    """What one batch sends: an envelope per entity partition, dead letters, and counts."""

    envelopes: dict[int, list[RoutedEvent]] = field(default_factory=dict)
    dead_letters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counts: BatchCounts = field(default_factory=BatchCounts)
    observed: list[tuple[str, int]] = field(default_factory=list)


class IngestStage:
    """Validation and routing; keeps per-input-partition progress for the watermark."""

    def __init__(self, validator: Validator, entity_partitions: int, idle_timeout_ms: int,
                 max_future_skew_ms: int = 7 * 86_400_000) -> None:
        self._validator = validator
        self._max_future_skew_ms = max_future_skew_ms
        self._entity_partitions = entity_partitions
        self.progress = SourceProgress(idle_timeout_ms)

    def process(self, messages: list[InputMessage], now_ms: int) -> IngestOutput:
        """Validate a batch. Progress is recorded later, by :meth:`commit_progress`, once the envelopes are sent."""
        out = IngestOutput()
        for message in messages:
            checked = self._validator.validate(message.kind, message.value)
            if not isinstance(checked, Rejection) and checked.ts > now_ms + self._max_future_skew_ms:
                checked = Rejection(Reason.INVALID_FIELD, "data.ts is more than "
                                    f"{format_duration(self._max_future_skew_ms)} ahead of the processing clock")
            if isinstance(checked, Rejection):
                out.counts.rejected[(message.topic, str(checked.reason))] += 1
                record = dead_letter(message.topic, message.partition, message.offset, checked.reason,
                                     checked.detail, message.value, message.key, now_ms)
                out.dead_letters.append((dead_letter_key(message.topic, message.partition, message.offset),
                                         record))
                continue
            out.envelopes.setdefault(partition_for(checked.key, self._entity_partitions), []).append(
                routed_item(checked, message))
            out.observed.append((source_name(message.topic, message.partition), checked.ts))
        return out

    def commit_progress(self, output: IngestOutput, now_ms: int) -> None:
        """Count the batch's events into input progress (after they were sent, so no report gets ahead of them)."""
        for source, ts in output.observed:
            self.progress.observe(source, ts, now_ms)


def routed_item(event: Event, message: InputMessage) -> RoutedEvent:
    """An event as carried to the entity stage: normalised fields plus what a dead letter would need."""
    raw = (message.value or b"").decode("utf-8")  # valid JSON, so valid UTF-8
    return RoutedEvent(str(event.kind), event.event_id, event.ts, event.key, event.attrs, message.topic,
                       message.partition, message.offset, raw)


# Bytes of events per entity-topic message, well below Kafka's default 1 MB request limit.
ENVELOPE_BYTES = 256 * 1024


def estimated_bytes(events: list[RoutedEvent]) -> list[int]:
    """About the size of each event in an envelope: the raw payload dominates; the rest is a few hundred bytes."""
    return [len(event.raw) + 300 for event in events]


def encode_envelope(events: list[RoutedEvent], progress: dict[str, int | None]) -> bytes:
    """An envelope for the entity topic: events first, then the input progress they are covered by."""
    return EntityEnvelope(events, progress).encode()


def encode_envelopes(events: list[RoutedEvent], progress: dict[str, int | None]) -> list[bytes]:
    """The same, split so no message grows too large; only the last carries the progress."""
    return [encode_envelope(chunk, progress if last else {})
            for last, chunk in chunked(events, ENVELOPE_BYTES, estimated_bytes(events))]
