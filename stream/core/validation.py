"""Decode and validate raw input bytes against the JSON Schemas in ``schemas/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from stream.core.events import Event, Kind, Reason, Rejection
from stream.core.fastschema import FastDecoder, fast_decoder
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
        schemas = {kind: load_schema(name) for kind, name in SCHEMA_FILES.items()}
        self._checks: dict[Kind, Callable[[Any], Any]] = {
            kind: fastjsonschema.compile(schema) for kind, schema in schemas.items()
        }
        self._fast: dict[Kind, FastDecoder | None] = {kind: fast_decoder(schema) for kind, schema in schemas.items()}

    def validate(self, kind: Kind, raw: bytes | None) -> Event | Rejection:
        """Decode, check against the kind's schema, and normalise."""
        if raw is None:
            return Rejection(Reason.INVALID_JSON, "message has no value (null payload)")
        if len(raw) > self._max_event_bytes:
            return Rejection(
                Reason.TOO_LARGE, f"payload is {len(raw)} bytes, over the limit of {self._max_event_bytes}"
            )
        accepted = self._accept_fast(kind, raw)
        return accepted if accepted is not None else self._validate_slow(kind, raw)

    def _accept_fast(self, kind: Kind, raw: bytes) -> Event | None:
        """The event when the fast path accepts it whole; None sends it to the slow path, which decides and words
        any rejection (``stream.core.fastschema``)."""
        fast = self._fast[kind]
        doc = fast.decode(raw) if fast is not None else None
        if doc is None:
            return None
        try:
            return self._normalise(kind, doc.get, parse_event_time(doc["ts"]))
        except ValueError:  # a calendar date that does not exist, an amount or currency refused (CurrencyError too)
            return None

    def _validate_slow(self, kind: Kind, raw: bytes) -> Event | Rejection:
        """orjson and fastjsonschema: what decides every input the fast path does not accept, and how it is worded."""
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
            return self._normalise(kind, doc.get, ts)
        except CurrencyError:
            return Rejection(Reason.UNKNOWN_CURRENCY, "data.currency has no configured exchange rate")
        except ValueError as exc:
            return Rejection(Reason.INVALID_FIELD, str(exc))

    def _money(self, get: Callable[[str], Any]) -> int:
        try:
            amount = parse_amount(get("amount"))
        except ValueError:
            raise ValueError("data.amount is not a finite amount between 0 and 1e15") from None
        return self._rates.to_micros(amount, get("currency"))

    def _normalise(self, kind: Kind, get: Callable[[str], Any], ts: int) -> Event:
        """The event of a document the schema accepted; ``get`` gives a field's value, None when absent (the
        schemas allow no null, so absent and None are one)."""
        event_id: str = get("event_id")
        if kind is Kind.PAGE_VIEW:
            visitor = get("visitor_id")
            attrs = {"visitor": visitor, "url": get("url"), "channel": get("channel"), "campaign": get("campaign")}
            return Event(kind, event_id, ts, visitor, attrs)
        if kind is Kind.LEAD:
            attrs = {"channel": get("channel"), "campaign": get("campaign"), "visitor": get("visitor_id"),
                     "asset": get("asset"), "owner": get("owner")}
            return Event(kind, event_id, ts, get("lead_id"), attrs)
        if kind is Kind.STAGE_CHANGE:
            amount = self._money(get) if get("amount") is not None else None
            attrs = {"stage": get("stage"), "amount": amount, "owner": get("owner")}
            return Event(kind, event_id, ts, get("lead_id"), attrs)
        attrs = {"channel": get("channel"), "campaign": get("campaign"), "amount": self._money(get)}
        return Event(kind, event_id, ts, event_id, attrs)


def _position_only(message: str) -> str:
    """orjson's messages name a position, never the payload; keep them short anyway."""
    return message[:200]
