"""Each integration test owns its topics and app id; the brokers are in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.brokers.apache_kafka import ApacheKafka
from tests.conftest import RunningBroker
from tests.integration.harness import Names


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
def kafka(broker_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Apache Kafka's address, for what only it has (transactions): the session broker when it is Kafka, else one
    started for the test."""
    if broker_kind == "kafka":
        broker: RunningBroker = request.getfixturevalue("session_broker")
        yield broker.bootstrap_servers
        return
    with ApacheKafka(log_path=tmp_path / "kafka.log") as own:
        yield own.bootstrap_servers
