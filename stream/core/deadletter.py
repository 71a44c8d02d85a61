"""Dead-letter records: the original bytes, where they came from, and why they were refused."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from stream.core.events import Reason
from stream.core.timeutil import format_rfc3339

DETAIL_LIMIT = 1000


def _text_or_base64(data: bytes, name: str, record: dict[str, Any]) -> None:
    """The bytes as text when they are UTF-8 and no longer so in JSON than in base64, else as base64.

    As JSON text a control character takes six bytes and a quote two: 900 KB of them made a dead letter of 5.4 MB.
    Base64 takes at most a third more than the bytes themselves, whatever they are.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and len(orjson.dumps(text)) - 2 <= 4 * -(-len(data) // 3):
        record[name] = text
    else:
        record[f"{name}_base64"] = base64.b64encode(data).decode("ascii")


def dead_letter(
    topic: str, partition: int, offset: int, reason: Reason, detail: str, value: bytes | str | None,
    key: bytes | None, now_ms: int,
) -> dict[str, Any]:
    """Build a record for the dead-letter topic; the payload is kept unchanged (see ``_text_or_base64``)."""
    record: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "reason": str(reason),
                              "detail": detail[:DETAIL_LIMIT]}
    _text_or_base64(value.encode("utf-8") if isinstance(value, str) else value or b"", "payload", record)
    if key is not None:
        _text_or_base64(key, "key", record)
    record["dead_lettered_at"] = format_rfc3339(now_ms)
    return record


def dead_letter_key(topic: str, partition: int, offset: int) -> str:
    """One key per source message, so a replayed rejection overwrites itself in a compacted topic."""
    return f"{topic}:{partition}:{offset}"
