"""Dead-letter records: the original bytes, where they came from, and why they were refused."""

from __future__ import annotations

import base64
from typing import Any

from stream.core.events import Reason
from stream.core.timeutil import format_rfc3339

DETAIL_LIMIT = 1000


def _text_or_base64(data: bytes, name: str, record: dict[str, Any]) -> None:
    try:
        record[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        record[f"{name}_base64"] = base64.b64encode(data).decode("ascii")


def dead_letter(
    topic: str, partition: int, offset: int, reason: Reason, detail: str, value: bytes | str | None,
    key: bytes | None, now_ms: int,
) -> dict[str, Any]:
    """Build a record for the dead-letter topic; the payload is kept unchanged (base64 when not UTF-8)."""
    record: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "reason": str(reason),
                              "detail": detail[:DETAIL_LIMIT]}
    if isinstance(value, str):
        record["payload"] = value
    else:
        _text_or_base64(value or b"", "payload", record)
    if key is not None:
        _text_or_base64(key, "key", record)
    record["dead_lettered_at"] = format_rfc3339(now_ms)
    return record


def dead_letter_key(topic: str, partition: int, offset: int) -> str:
    """One key per source message, so a replayed rejection overwrites itself in a compacted topic."""
    return f"{topic}:{partition}:{offset}"
