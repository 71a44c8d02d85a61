"""BatchProducer's close: what cannot be delivered is dropped, so closing never waits minutes for a broker."""

from __future__ import annotations

import time

import pytest

from stream.brokers.embedded import free_port
from stream.kafka.produce import BatchProducer


def test_close_drops_what_cannot_be_delivered_and_destroys_the_client() -> None:
    producer = BatchProducer({"bootstrap.servers": f"127.0.0.1:{free_port()}", "log_level": 0})  # nobody listens
    producer.send("t-nowhere", b"{}")
    started = time.monotonic()
    producer.close(timeout_s=0.5)
    assert time.monotonic() - started < 5  # librdkafka's close alone waits out message.timeout.ms (5 minutes)
    assert producer.delivered == 0 and len(producer.failed) == 1  # its delivery report was served: purged
    with pytest.raises(RuntimeError, match="closed"):
        producer.send("t-nowhere", b"{}")
