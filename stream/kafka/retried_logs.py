"""Client errors that the Kafka client retries by itself, logged as warnings instead of errors.

aiokafka logs a failed group coordinator lookup at ERROR and then retries it. On Apache Kafka the first
consumer group of a new cluster always meets one: the broker answers COORDINATOR_NOT_AVAILABLE (error 15)
while it creates ``__consumer_offsets``, for about a second (measured on Kafka 4.4: one such line per worker
started on a fresh broker, none later). The same lookup fails with 14 (the coordinator is loading its state)
or 16 (not the coordinator) after a broker restart or a leader move. None of them is an error the operator
must act on; a lookup that keeps failing still shows, once a second, as a warning.
"""

from __future__ import annotations

import logging

# (logger, start of the message) of the retried lookups.
RETRIED = (
    ("aiokafka.consumer.group_coordinator", ("Group Coordinator Request failed: [Error 14]",
                                             "Group Coordinator Request failed: [Error 15]",
                                             "Group Coordinator Request failed: [Error 16]")),
)


class Demote(logging.Filter):
    """Lowers ERROR records whose message starts with one of ``prefixes`` to WARNING."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage().startswith(self.prefixes):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Demote the retried lookups in this process."""
    for name, prefixes in RETRIED:
        logging.getLogger(name).addFilter(Demote(prefixes))
