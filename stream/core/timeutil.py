"""Event-time parsing, formatting and UTC-aligned tumbling windows."""

from __future__ import annotations

import re
from datetime import UTC, datetime

MS_PER_SECOND = 1000
# The contract's integer form and the schema's bound: 9999-12-31T23:59:59.999Z.
MAX_EPOCH_MS = 253_402_300_799_999

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
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
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"ts {value!r} is not RFC 3339: {exc}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"ts {value!r} has no UTC offset")
    ms = int(parsed.timestamp() * 1000)
    # timestamp() goes through a float: rebuild the sub-second part exactly.
    ms = (ms // 1000) * 1000 + parsed.microsecond // 1000
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise ValueError(f"ts {value!r} is before 1970 or after 9999")
    return ms


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
