"""Dead-letter records: the original bytes, where they came from, and why they were refused."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from stream.core.events import Reason
from stream.core.timeutil import format_rfc3339

DETAIL_LIMIT = 1000
# The most of a message's value and key a dead letter carries: with base64 and the rest, the record stays under
# the 4 MiB the worker's producer sends (stream.kafka.clients.MAX_REQUEST_BYTES). Kafka refuses messages over 1 MB by
# default, so only a broker or topic configured for larger ones (or one with no limit) brings a longer one.
PAYLOAD_LIMIT = 2 * 1024 * 1024
KEY_LIMIT = 64 * 1024


def _text_or_base64(data: bytes, name: str, record: dict[str, Any], limit: int) -> None:
    """The bytes as text when they are UTF-8 and no longer so in JSON than in base64, else as base64.

    As JSON text a control character takes six bytes and a quote two: 900 KB of them made a dead letter of 5.4 MB.
    Base64 takes at most a third more than the bytes themselves, whatever they are. Bytes over ``limit`` are cut
    to it, as base64, with their full size in ``<name>_bytes`` and ``<name>_truncated`` true: a 3.5 MB message
    made a dead letter the producer could not send. The whole message stays at its topic, partition and offset.
    """
    if len(data) > limit:
        record[f"{name}_base64"] = base64.b64encode(data[:limit]).decode("ascii")
        record[f"{name}_bytes"] = len(data)
        record[f"{name}_truncated"] = True
        return
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
    """Build a record for the dead-letter topic; the payload is kept unchanged up to 2 MiB (see ``_text_or_base64``)."""
    record: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "reason": str(reason),
                              "detail": detail[:DETAIL_LIMIT]}
    _text_or_base64(value.encode("utf-8") if isinstance(value, str) else value or b"", "payload", record,
                    PAYLOAD_LIMIT)
    if key is not None:
        _text_or_base64(key, "key", record, KEY_LIMIT)
    record["dead_lettered_at"] = format_rfc3339(now_ms)
    return record


def dead_letter_key(topic: str, partition: int, offset: int) -> str:
    """One key per source message, so a replayed rejection overwrites itself in a compacted topic."""
    return f"{topic}:{partition}:{offset}"
