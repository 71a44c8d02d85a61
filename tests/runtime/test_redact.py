"""Secrets never reach a log record's message, in whatever form a library writes them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from stream.runtime import redact

SECRET = "s3cret-pa'ss\\wörd"


@pytest.fixture
def records() -> Iterator[list[str]]:
    """The messages of records logged while the redaction is installed (the factory restored after)."""
    factory = logging.getLogRecordFactory()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("test.redact")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    redact.install([SECRET])
    try:
        yield seen
    finally:
        logging.setLogRecordFactory(factory)
        logger.removeHandler(handler)


def test_a_secret_is_masked_as_text_in_a_str_repr_and_in_a_bytes_repr(records: list[str]) -> None:
    log = logging.getLogger("test.redact")
    log.info("password %s here", SECRET)
    log.debug("a str %r", SECRET)
    log.debug("bytes %r", SECRET.encode())
    log.debug("dict %r", {"password": SECRET})
    assert len(records) == 4
    assert all(SECRET not in message and repr(SECRET.encode())[2:-1] not in message for message in records), records
    assert all(redact.MASK in message for message in records)


def test_any_sasl_token_is_masked_and_other_records_are_left_alone(records: list[str]) -> None:
    log = logging.getLogger("test.redact")
    # The Kafka client's debug line for the SASL request, with a password the settings do not know of.
    log.debug("Request to %s:%d %d: %s", "127.0.0.1", 9092, 3,
              "SaslAuthenticateRequest_v1(sasl_auth_bytes=b'\\x00kpi\\x00other-pa\\'ss')")
    log.debug("Request to %s: %s", "x", 'SaslAuthenticateRequest_v0(sasl_auth_bytes=b"\\x00kpi\\x00it\'s")')
    log.info("ordinary %s and %d", "text", 5)
    assert records[0] == "Request to 127.0.0.1:9092 3: SaslAuthenticateRequest_v1(sasl_auth_bytes=***)"
    assert records[1] == "Request to x: SaslAuthenticateRequest_v0(sasl_auth_bytes=***)"
    assert records[2] == "ordinary text and 5"


def test_with_no_secrets_only_sasl_tokens_are_masked() -> None:
    mask = redact.redactor([])
    assert mask("nothing secret") == "nothing secret"
    assert mask("sasl_auth_bytes=b'\\x00a\\x00b'") == "sasl_auth_bytes=***"


def test_a_masked_record_formats_again_under_a_formatter_that_wraps_its_arguments(records: list[str]) -> None:
    log = logging.getLogger("test.redact")
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1, "100%% of %s", (SECRET,), None)
    # Faust's formatter turns arguments that are not a tuple into one, then formats the message with them.
    if not isinstance(record.args, tuple):
        record.args = (record.args,)
    assert record.getMessage() == f"100% of {redact.MASK}"
