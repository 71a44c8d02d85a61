"""Event-time parsing, formatting and UTC-aligned tumbling windows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

# The contract's integer form and the schema's bound: 9999-12-31T23:59:59.999Z.
MAX_EPOCH_MS = 253_402_300_799_999

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_ZERO_DURATION = re.compile(r"^\s*0+\s*(ms|s|m|h|d)?\s*$")
# RFC 3339 date-time with a mandatory offset (the schemas' pattern; ISO 8601's other forms are refused).
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """Parse a duration such as ``10m``, ``1h``, ``1d`` or ``500ms`` into milliseconds.

    Raises:
        ValueError: when the text is not a positive duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 30s, 10m, 1h, 1d)")
    value = int(match.group(1)) * _DURATION_MS[match.group(2)]
    if value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def is_zero_duration(text: str) -> bool:
    """Whether ``text`` spells a zero duration (``0``, ``0s``, ``0ms``, ...)."""
    return _ZERO_DURATION.match(text) is not None


@lru_cache(maxsize=64)
def format_duration(ms: int) -> str:
    """Format milliseconds as the largest exact unit: 3600000 -> ``1h``."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_event_time(value: object) -> int:
    """Turn the contract's ``ts`` (RFC 3339 with offset, or epoch ms) into epoch milliseconds.

    Raises:
        ValueError: when the value is neither form, has no offset, or is out of range.
    """
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or integer milliseconds, not a boolean")
    if isinstance(value, int):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise ValueError(f"ts {value} is outside 0..{MAX_EPOCH_MS} milliseconds")
        return value
    if not isinstance(value, str):
        raise ValueError("ts must be an RFC 3339 string or integer milliseconds")
    text = value.strip()
    if not _RFC3339.match(text):
        raise ValueError("ts is not an RFC 3339 date-time with an offset")
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    fraction = ""
    if "." in text[19:]:
        # datetime keeps microseconds; milliseconds are all we need, so cut the digits beyond them.
        head, _, rest = text.partition(".")
        digits = rest[: len(rest) - 6]
        fraction, text = digits[:3].ljust(3, "0"), head + rest[len(digits):]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("ts is not a valid calendar date-time") from None
    if parsed.tzinfo is None:
        raise ValueError("ts has no UTC offset")
    # Exact integer arithmetic: timestamp() goes through a float and loses the last digits far from 1970.
    delta = parsed - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + int(fraction or 0)
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise ValueError(f"ts {value!r} is before 1970 or after 9999")
    return ms


# Window bounds repeat for every record of a window: formatting is cached (a pure function of ms).
@lru_cache(maxsize=8192)
def format_rfc3339(ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC (``2026-11-22T08:00:00Z``, milliseconds when not whole)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the UTC-aligned tumbling window of ``size_ms`` that holds ``ts_ms``."""
    return ts_ms - ts_ms % size_ms


def earliest_window_end(ts_ms: int, sizes_ms: tuple[int, ...]) -> int:
    """The soonest end among the windows (one per size) that hold ``ts_ms``."""
    return min(window_start(ts_ms, size) + size for size in sizes_ms)
