"""Tests for stream.core.deadletter: the record shape, payload encoding and schema validity."""

import base64
import calendar
import json
from pathlib import Path

import fastjsonschema
import pytest

from stream.core.deadletter import DETAIL_LIMIT, dead_letter, dead_letter_key
from stream.core.events import Reason

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
validate_dead_letter = fastjsonschema.compile(json.loads((SCHEMA_DIR / "dead-letter.schema.json").read_text("utf-8")))
NOW = calendar.timegm((2026, 11, 22, 8, 15, 0, 0, 0, 0)) * 1000


@pytest.mark.parametrize(
    ("value", "key", "expected_fields"),
    [
        (b'{"ts": 1', None, {"payload": '{"ts": 1'}),
        ('{"ts": 1', None, {"payload": '{"ts": 1'}),
        ("caf\u00e9".encode(), b"lead-1", {"payload": "caf\u00e9", "key": "lead-1"}),
        # b"\xff\xfe\x00" -> base64 "//4A" (0xFF 0xFE 0x00 = 111111 111111 111000 000000).
        (b"\xff\xfe\x00", None, {"payload_base64": "//4A"}),
        (b"\xc3\x28", b"\xff", {"payload_base64": "wyg=", "key_base64": "/w=="}),
        (None, None, {"payload": ""}),
        (b"", b"", {"payload": "", "key": ""}),
    ],
    ids=[
        "utf8-bytes",
        "text",
        "non-ascii-utf8-with-key",
        "not-utf8",
        "not-utf8-key",
        "null-value",
        "empty-value-and-key",
    ],
)
def test_dead_letter_record(value, key, expected_fields):
    record = dead_letter("leads", 3, 42, Reason.INVALID_JSON, "not valid UTF-8 JSON", value, key, NOW)
    assert record == {
        "topic": "leads",
        "partition": 3,
        "offset": 42,
        "reason": "invalid_json",
        "detail": "not valid UTF-8 JSON",
        **expected_fields,
        "dead_lettered_at": "2026-11-22T08:15:00Z",
    }
    validate_dead_letter(record)


@pytest.mark.parametrize("value", [b"\x00\x01\xfe\xff" * 10, bytes(range(256))], ids=["short", "every-byte"])
def test_base64_payload_decodes_to_the_original_bytes(value):
    record = dead_letter("spend", 0, 0, Reason.INVALID_JSON, "x", value, None, NOW)
    assert base64.b64decode(record["payload_base64"], validate=True) == value
    validate_dead_letter(record)


@pytest.mark.parametrize("reason", list(Reason), ids=[str(r) for r in Reason])
def test_every_reason_validates(reason):
    record = dead_letter("stage-changes", 0, 7, reason, "why", b"{}", None, NOW)
    assert record["reason"] == reason.value
    validate_dead_letter(record)


def test_detail_is_cut_to_the_limit():
    record = dead_letter("leads", 0, 0, Reason.INVALID_FIELD, "d" * (DETAIL_LIMIT + 50), b"{}", None, NOW)
    assert record["detail"] == "d" * 1000
    validate_dead_letter(record)


def test_dead_letter_key_is_one_per_source_message():
    assert dead_letter_key("leads", 3, 42) == "leads:3:42"
    assert dead_letter_key("leads", 3, 42) != dead_letter_key("leads", 3, 43)
    assert dead_letter_key("leads", 3, 42) != dead_letter_key("leads", 4, 42)


def _original(record):
    return record["payload"].encode() if "payload" in record else base64.b64decode(record["payload_base64"])


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b'{"event_id": "e1"}', "payload"),  # ordinary JSON: readable text
        (b"\x01" * 3000, "payload_base64"),  # six bytes each as JSON text
        (b'"' * 3000, "payload_base64"),  # two bytes each
        (b"\xff" * 3000, "payload_base64"),  # not UTF-8
        ("caf\u00e9 \u2713".encode(), "payload"),  # UTF-8 that JSON keeps as it is
    ],
)
def test_a_dead_letter_is_never_more_than_a_third_larger_than_its_message(value, field):
    record = dead_letter("leads", 0, 1, Reason.TOO_LARGE, "x", value, None, 0)
    assert field in record and _original(record) == value
    assert len(json.dumps(record, ensure_ascii=False).encode()) <= 4 * -(-len(value) // 3) + 300


def test_a_value_or_key_too_long_for_one_message_is_cut_and_says_so():
    value, key = b"\x01" * 3_500_000, b"k" * 100_000
    record = dead_letter("leads", 2, 9, Reason.TOO_LARGE, "x", value, key, 0)
    validate_dead_letter(record)
    assert base64.b64decode(record["payload_base64"]) == value[:2 * 1024 * 1024]
    assert record["payload_bytes"] == 3_500_000 and record["payload_truncated"] is True
    assert base64.b64decode(record["key_base64"]) == key[:64 * 1024]
    assert record["key_bytes"] == 100_000 and record["key_truncated"] is True
    assert len(json.dumps(record).encode()) < 3 * 1024 * 1024  # under the producer's 4 MiB requests
    # Up to the limit nothing is cut, and nothing says so.
    whole = dead_letter("leads", 2, 9, Reason.TOO_LARGE, "x", value[:2 * 1024 * 1024], None, 0)
    assert _original(whole) == value[:2 * 1024 * 1024] and "payload_truncated" not in whole


def test_the_schema_refuses_a_cut_value_without_its_size():
    record = dead_letter("leads", 2, 9, Reason.TOO_LARGE, "x", b"\x01" * 3_000_000, None, 0)
    del record["payload_bytes"]
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validate_dead_letter(record)
