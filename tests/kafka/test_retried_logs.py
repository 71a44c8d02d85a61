"""The coordinator lookups aiokafka retries by itself are warnings; its other errors stay errors."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, UnknownMemberIdError

from stream.kafka import retried_logs


@pytest.mark.parametrize(("error", "level"), [
    (GroupCoordinatorNotAvailableError(), "WARNING"),  # what a new Apache Kafka answers first
    (UnknownMemberIdError(), "ERROR"),
])
def test_retried_lookups_are_warnings(error: Exception, level: str, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("aiokafka.consumer.group_coordinator")
    demote = retried_logs.Demote(dict(retried_logs.RETRIED)[logger.name])
    logger.addFilter(demote)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.error("Group Coordinator Request failed: %s", error)  # aiokafka's own call
    finally:
        logger.removeFilter(demote)
    assert [record.levelname for record in caplog.records] == [level]
