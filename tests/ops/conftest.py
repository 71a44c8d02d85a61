"""The ops tests share the integration tests' fixtures: one real broker per session, and a test's own names."""

from __future__ import annotations

from tests.integration.conftest import names

__all__ = ["names"]
