"""The four input event kinds, normalised, and the reasons an input can be rejected."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """Input event kinds; the value is the default topic name."""

    PAGE_VIEW = "page-views"
    LEAD = "leads"
    STAGE_CHANGE = "stage-changes"
    SPEND = "spend"


class Reason(StrEnum):
    """Machine-readable dead-letter reasons (schemas/dead-letter.schema.json)."""

    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_CURRENCY = "unknown_currency"
    LATE = "late"
    UNKNOWN_LEAD = "unknown_lead"


@dataclass(frozen=True, slots=True)
class Event:
    """A valid input event.

    ``key`` is the entity the event is routed and deduplicated by (lead, visitor
    or the event itself); ``attrs`` holds the kind's normalised fields, money in
    integer micro-units of the reporting currency.
    """

    kind: Kind
    event_id: str
    ts: int
    key: str
    attrs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input could not be used; ``detail`` never quotes the payload's values."""

    reason: Reason
    detail: str
