"""One real broker (Tansu) for the integration test session; each test owns its topics and app id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker
from tests.integration.harness import Names


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = EmbeddedBroker(log_path=Path(tmp_path_factory.mktemp("broker")) / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def names() -> Names:
    return Names()
