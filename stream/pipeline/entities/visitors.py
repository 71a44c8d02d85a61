"""Visitor touches (page views), and the lead values that reach a visitor from the partition that owns the lead.

A lead's visitor may live on another entity partition: when a lead's value (creation time, pipeline, revenue) or
its visitor changes, the lead's partition sends the value there as a :class:`LeadValue` through the entity topic
(a reroute), and the visitor's partition credits the visitor's touches with it.
"""

from __future__ import annotations

from typing import Any

import orjson

from stream.core import jsonbytes
from stream.core.visitors import (
    VisitorState,
    attribution_deltas,
    attribution_facts,
    forget_closed_windows,
    from_doc,
    to_doc,
    view,
)
from stream.pipeline.entities.batch import EntityBatch
from stream.pipeline.entities.config import EntityConfig
from stream.pipeline.keys import visitor_key
from stream.pipeline.wire import LeadValue, RoutedEvent


class VisitorTouches:
    """Applies page views and lead values to visitor states."""

    def __init__(self, config: EntityConfig) -> None:
        self.config = config

    def load(self, batch: EntityBatch, visitor_id: str, watermark: int | None) -> VisitorState:
        """The visitor's state in this batch, read from the table the first time, without its closed windows."""
        key = visitor_key(visitor_id)
        visitor = batch.visitors.get(key)
        if visitor is None:
            stored = batch.states.get(key)
            visitor = from_doc(orjson.loads(stored)) if stored is not None else VisitorState()
            batch.visitors[key] = visitor
            if watermark is not None:
                forget_closed_windows(visitor, watermark - self.config.allowed_lateness_ms, self.config.windows)
        return visitor

    def take_lead_value(self, batch: EntityBatch, value: LeadValue, watermark: int | None) -> None:
        """Credit (or, with no value, stop crediting) the visitor's touches with one of its leads."""
        cfg = self.config
        visitor = self.load(batch, value.visitor, watermark)
        before = attribution_facts(visitor, cfg.attribution)
        if value.value is None:
            visitor.leads.pop(value.lead, None)
        else:
            visitor.leads[value.lead] = value.value
        batch.add_deltas(attribution_deltas(before, attribution_facts(visitor, cfg.attribution), cfg.windows))

    def view(self, batch: EntityBatch, visitor: VisitorState, event: RoutedEvent) -> None:
        """A page view's traffic counts, and any change it makes to the credit of the visitor's leads."""
        cfg = self.config
        attrs = event.attrs
        credited = attribution_facts(visitor, cfg.attribution) if visitor.leads else None
        view(visitor, event.ts, attrs["channel"], attrs["campaign"], attrs["url"], cfg.windows,
             cfg.attribution.touch_limit, event.event_id, batch.envelope_deltas)
        if credited is not None:
            batch.add_deltas(attribution_deltas(credited, attribution_facts(visitor, cfg.attribution), cfg.windows))


def send_lead_values(batch: EntityBatch, lead_id: str, ts: int, before: tuple[str | None, dict[str, Any] | None],
                     after: tuple[str | None, dict[str, Any] | None]) -> None:
    """Tell the visitors' partitions of a change to a lead's (visitor, value): the old visitor loses the lead."""
    before_visitor, before_value = before
    after_visitor, after_value = after
    if before_visitor is not None and before_visitor != after_visitor:
        batch.send_lead_value(LeadValue(lead_id, before_visitor, ts, None))
    if after_visitor is not None and after_value != before_value:
        batch.send_lead_value(LeadValue(lead_id, after_visitor, ts, after_value))


def store_visitors(batch: EntityBatch) -> None:
    """Write the batch's visitor states (an empty one is deleted)."""
    for key, visitor in batch.visitors.items():
        batch.states.set(key, None if visitor.is_empty() else jsonbytes.dumps(to_doc(visitor)))
