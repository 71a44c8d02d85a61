"""Secrets out of every log record, whoever logs it.

The Kafka client logs each request it sends at debug level, the SASL
authentication request too, whose token carries the password
(``SaslAuthenticateRequest_v1(sasl_auth_bytes=b'\\x00user\\x00password')``). A
record factory sees every record before any handler, so no logger or handler
set up later (Faust sets up its own) can write a secret out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"
# The SASL token of an authentication request or response, whatever credentials it holds.
_SASL_BYTES = re.compile(r"""(sasl_auth_bytes=)b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _forms(secret: str) -> set[str]:
    """The secret as text, and as it shows inside the repr of a str or of its UTF-8 bytes."""
    return {form for form in (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]) if form}


def redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that masks every form of the secrets, and any SASL token, in a text."""
    forms = sorted({form for secret in secrets if secret for form in _forms(secret)}, key=len, reverse=True)

    def redact(text: str) -> str:
        text = _SASL_BYTES.sub(rf"\1{MASK}", text)
        for form in forms:
            text = text.replace(form, MASK)
        return text

    return redact


def install(secrets: Iterable[str]) -> None:
    """Mask the secrets (and SASL tokens) in every log record made from now on, in this process."""
    redact = redactor(secrets)
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report, not ours
            return record
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()  # a tuple: some formatters wrap anything else in one
        return record

    logging.setLogRecordFactory(factory)
