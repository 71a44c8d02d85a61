"""Producing to Kafka with confluent-kafka: batched, with delivery errors surfaced."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import KafkaError, Producer

from stream.core.events import Kind


class ProduceError(RuntimeError):
    """A message could not be delivered."""


class BatchProducer:
    """A producer tuned for throughput (linger and batching), counting deliveries and failures."""

    def __init__(self, config: dict[str, Any], linger_ms: int = 20) -> None:
        self._producer = Producer({**config, "linger.ms": linger_ms, "batch.num.messages": 10000,
                                   "queue.buffering.max.messages": 500000, "compression.type": "none"})
        self.delivered = 0
        self.failed: list[str] = []

    def _on_delivery(self, error: KafkaError | None, _: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed.append(str(error))

    def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Queue one message, waiting for room when the local queue is full."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued message.

        Raises:
            ProduceError: when some were not delivered.
        """
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise ProduceError(f"{remaining} messages still undelivered after {timeout_s:.0f} s")
        if self.failed:
            raise ProduceError(f"{len(self.failed)} messages failed, first: {self.failed[0]}")

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for what is queued, drop what is left, and destroy the client (its threads and
        connections); the producer cannot be used afterwards. Call it on the thread that used the producer."""
        if self._producer.flush(timeout_s):
            # Producer.close would wait for them until message.timeout.ms (5 minutes by default).
            self._producer.purge()
            self._producer.flush(0)  # serves the purged messages' delivery reports
        self._producer.close()


def produce_paced(producer: BatchProducer, topics: dict[Kind, str], events: Iterable[tuple[Kind, bytes]],
                  rate_per_s: float | None, duration_s: float | None, should_stop: Any = None) -> Iterator[int]:
    """Send events, at ``rate_per_s`` (None: as fast as possible) for at most ``duration_s``; yields counts."""
    started = time.monotonic()
    sent = 0
    for kind, payload in events:
        if should_stop is not None and should_stop():
            break
        elapsed = time.monotonic() - started
        if duration_s is not None and elapsed >= duration_s:
            break
        if rate_per_s:
            ahead = sent / rate_per_s - elapsed
            if ahead > 0:
                time.sleep(ahead)
        producer.send(topics[kind], payload)
        sent += 1
        if sent % 1000 == 0:
            yield sent
    producer.flush()
    yield sent
