"""Each integration test owns its topics and app id; the brokers are in ``tests/conftest.py``."""

from __future__ import annotations

import pytest

from tests.integration.harness import Names


@pytest.fixture
def names() -> Names:
    return Names()
