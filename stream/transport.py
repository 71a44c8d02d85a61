"""Faust's aiokafka transport with a configurable fetch wait.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its worker
consumer. On brokers that answer a fetch only when the wait runs out (the
embedded Tansu broker) every hop of the pipeline then costs that long, and a
KPI record trails its event by seconds; a short wait keeps updates within
about a second. It only matters while a topic is idle: a busy fetch returns
as soon as there is data.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the fetcher starts, which is after construction.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    thread_class: ClassVar[type[_ConsumerThread]] = _ConsumerThread

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)


class KpiApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
        consumer = type("Consumer", (_Consumer,), {"thread_class": thread})
        self._transport_class = type("Transport", (faust_aiokafka.Transport,), {"Consumer": consumer})
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        transport: TransportT = self._transport_class(self.conf.broker_consumer, self, loop=self.loop)
        return transport
