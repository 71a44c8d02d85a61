"""Decode and validate raw input bytes against the JSON Schemas in ``schemas/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from stream.core.events import Event, Kind, Reason, Rejection
from stream.core.money import CurrencyError, RateTable, parse_amount
from stream.core.timeutil import parse_event_time

SCHEMA_FILES = {
    Kind.PAGE_VIEW: "page-view.schema.json",
    Kind.LEAD: "lead.schema.json",
    Kind.STAGE_CHANGE: "stage-change.schema.json",
    Kind.SPEND: "spend.schema.json",
}


def schema_dir() -> Path:
    """Where the schemas are: packaged beside the code in a wheel, at the repository top otherwise."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "schemas"
    return packaged if packaged.is_dir() else here.parent / "schemas"


def load_schema(name: str) -> dict[str, Any]:
    """Load one schema file by name."""
    loaded: dict[str, Any] = orjson.loads((schema_dir() / name).read_bytes())
    return loaded


class Validator:
    """Turns raw message bytes into an :class:`Event` or a :class:`Rejection`; never raises on bad input."""

    def __init__(self, rates: RateTable, max_event_bytes: int) -> None:
        self._rates = rates
        self._max_event_bytes = max_event_bytes
        self._checks: dict[Kind, Callable[[Any], Any]] = {
            kind: fastjsonschema.compile(load_schema(name)) for kind, name in SCHEMA_FILES.items()
        }

    def validate(self, kind: Kind, raw: bytes | None) -> Event | Rejection:
        """Decode, check against the kind's schema, and normalise."""
        if raw is None:
            return Rejection(Reason.INVALID_JSON, "message has no value (null payload)")
        if len(raw) > self._max_event_bytes:
            return Rejection(
                Reason.TOO_LARGE, f"payload is {len(raw)} bytes, over the limit of {self._max_event_bytes}"
            )
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Rejection(Reason.INVALID_JSON, f"not valid UTF-8 JSON: {_position_only(str(exc))}")
        if not isinstance(doc, dict):
            return Rejection(Reason.NOT_OBJECT, f"payload is a JSON {type(doc).__name__}, not an object")
        try:
            self._checks[kind](doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            reason = Reason.MISSING_FIELD if exc.rule in ("required", "dependencies") else Reason.INVALID_FIELD
            return Rejection(reason, exc.message)
        try:
            ts = parse_event_time(doc["ts"])
        except ValueError:
            return Rejection(Reason.INVALID_FIELD, "data.ts is not a valid calendar date-time")
        try:
            return self._normalise(kind, doc, ts)
        except CurrencyError:
            return Rejection(Reason.UNKNOWN_CURRENCY, "data.currency has no configured exchange rate")
        except ValueError as exc:
            return Rejection(Reason.INVALID_FIELD, str(exc))

    def _money(self, doc: dict[str, Any]) -> int:
        try:
            amount = parse_amount(doc["amount"])
        except ValueError:
            raise ValueError("data.amount is not a finite amount between 0 and 1e15") from None
        return self._rates.to_micros(amount, doc["currency"])

    def _normalise(self, kind: Kind, doc: dict[str, Any], ts: int) -> Event:
        event_id: str = doc["event_id"]
        get = doc.get
        if kind is Kind.PAGE_VIEW:
            attrs = {"visitor": doc["visitor_id"], "url": doc["url"], "channel": get("channel"),
                     "campaign": get("campaign")}
            return Event(kind, event_id, ts, doc["visitor_id"], attrs)
        if kind is Kind.LEAD:
            attrs = {"channel": doc["channel"], "campaign": get("campaign"), "visitor": get("visitor_id"),
                     "asset": get("asset"), "owner": get("owner")}
            return Event(kind, event_id, ts, doc["lead_id"], attrs)
        if kind is Kind.STAGE_CHANGE:
            amount = self._money(doc) if "amount" in doc else None
            attrs = {"stage": doc["stage"], "amount": amount, "owner": get("owner")}
            return Event(kind, event_id, ts, doc["lead_id"], attrs)
        attrs = {"channel": doc["channel"], "campaign": get("campaign"), "amount": self._money(doc)}
        return Event(kind, event_id, ts, event_id, attrs)


def _position_only(message: str) -> str:
    """orjson's messages name a position, never the payload; keep them short anyway."""
    return message[:200]
