"""Topic setup fails with a clear message, within its timeout, when no broker answers."""

from __future__ import annotations

import time

import pytest

from stream.broker import free_port
from stream.kafka import TopicError, ensure_topics
from stream.settings import Settings


def test_no_broker_is_reported_within_the_timeout() -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with pytest.raises(TopicError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+: .*transport failure"):
        ensure_topics(settings, timeout_s=2.0)
    assert 1.5 <= time.monotonic() - started < 10
