"""The steps' ``Output`` on Faust: records to Kafka topics, table writes to a store and its changelog, and the
wait for their delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import faust

from stream.state.base import TableStore

# What a Kafka producer's send takes: topic, key, value, partition, timestamp, headers; it returns a future.
Send = Callable[[str, bytes | None, bytes | None, int | None, int | None, Any], Awaitable[Awaitable[Any]]]


@dataclass(frozen=True, slots=True)
class Routes:
    """Where each route of the steps goes in this app."""

    topics: Mapping[str, faust.TopicT]  # routes sent through Faust's ``Topic.send`` (internal, dead letters)
    raw_topics: Mapping[str, str]  # routes sent straight to the producer, by topic name (KPI topics)
    tables: Mapping[str, faust.Table[bytes, bytes]]
    producer: Callable[[], Awaitable[Any]]  # the app's started producer (``App.maybe_start_producer``)


class TableView:
    """A Faust table as the stages read it (``stream.pipeline.state.Store``): straight from its store.

    Faust's ``Table.get`` goes through ``Mapping.get`` and the table's ``__getitem__``, which asks the store
    whether it holds the key and then reads it again, runs a sensor, and raises ``KeyError`` for a missing key:
    two RocksDB reads per lookup with the disk store, 10 % of the worker's samples on the lead-heavy replay (one
    profile). The store's own mapping (``LocalTable``, ``PartitionedData``) answers the same ``get`` in one read.
    """

    __slots__ = ("_table",)

    def __init__(self, table: faust.Table[bytes, bytes]) -> None:
        self._table = table

    def get(self, key: bytes, /) -> bytes | None:
        """The stored value, or None."""
        value: bytes | None = _store(self._table).data.get(key)
        return value

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """All stored (key, value) pairs."""
        return cast(Iterable[tuple[bytes, bytes]], _store(self._table).data.items())


def _store(table: faust.Table[bytes, bytes]) -> TableStore:
    # A cast, not a check: it runs on every lookup, and the settings allow only the stores of stream.state.
    return cast(TableStore, table.data)


async def _write(table: faust.Table[bytes, bytes], partition: int, writes: dict[bytes, bytes | None], send: Send
                 ) -> list[Awaitable[Any]]:
    """Apply a batch's writes to ``table`` and send them to its changelog partition; the sends, to be awaited.

    Faust's own table writes go through its producer buffer, and it commits input offsets without waiting for
    them, so a worker killed between the two keeps the offset and loses the state. Sent here directly, each
    write has a future the step waits for before the batch is acked. ``send`` is the app's producer (under
    ``exactly_once`` its transaction manager), not the changelog topic's ``send``, which wraps every record in
    a message, a future and a callback of its own (3.7 % of the worker's samples on a backlog, in one profile), the
    callback to record the offset for Faust's own stores. Ours learn the offsets from ``FaustOutput.delivered``.

    Each key's partition is noted as table recovery notes it, so that the store drops the key once this worker
    no longer owns the partition. Faust notes it only for keys it restores: the keys a worker writes would
    stay in its memory after a rebalance took their partition away, and come back stale if it got the
    partition again after the changelog had been compacted.
    """
    sent: list[Awaitable[Any]] = []
    store = _store(table)
    topic = table.changelog_topic.get_topic_name()
    for key, value in writes.items():
        if value is not None:
            store.put(key, value, partition)
        elif not store.delete(key):
            continue
        sent.append(await send(topic, key, value, partition, None, None))
    return sent


async def delivered(sends: list[Awaitable[Any]]) -> None:
    """Wait until every send is delivered; the first that failed raises its error.

    The futures are awaited one after another, skipping those already done: the producer completes all the
    futures of one request together, so this waits about once per request, where ``asyncio.gather`` put a
    callback on every future (5 % of the worker's samples on the lead-heavy replay, one profile). A stop
    cancels the wait but never the sends themselves (``asyncio.wait`` leaves them alone): faust completes a
    send's future when the broker answers, and a future cancelled under it makes faust's producer fail at
    shutdown.
    """
    futures = [asyncio.ensure_future(send) for send in sends]  # the producer's futures pass unchanged
    for future in futures:
        if not future.done():
            await asyncio.wait([future])
    for future in futures:
        future.result()


class FaustOutput:
    """One batch's output: what it sent and wrote, awaited by ``delivered``."""

    def __init__(self, routes: Routes) -> None:
        self._routes = routes
        self._pending: list[Awaitable[Any]] = []
        self._written: dict[TableStore, dict[int, Awaitable[Any]]] = {}  # store -> partition -> last send
        self._send: Send | None = None

    async def _producer_send(self) -> Send:
        # Straight to the producer: faust's ``Topic.send`` wraps each record in its own message, future and
        # callback objects, which was 9 % of the worker's time at 2,000 events/s. The producer is the one
        # ``Topic.send`` would use: under ``exactly_once`` faust's transaction manager.
        if self._send is None:
            self._send = cast(Send, (await self._routes.producer()).send)
        return self._send

    async def send(self, route: str, value: bytes, partition: int | None = None, key: bytes | None = None) -> None:
        """Send a record to the topic of ``route``."""
        topic = self._routes.topics.get(route)
        if topic is not None:
            self._pending.append(await topic.send(key=key, value=value, partition=partition))
            return
        send = await self._producer_send()
        self._pending.append(await send(self._routes.raw_topics[route], key, value, partition, None, None))

    async def write(self, table: str, partition: int, writes: dict[bytes, bytes | None]) -> None:
        """Apply writes to a table's store and send them to its changelog."""
        faust_table = self._routes.tables[table]
        sent = await _write(faust_table, partition, writes, await self._producer_send())
        self._pending += sent
        store = _store(faust_table)
        self._written.setdefault(store, {})
        if sent:
            self._written[store][partition] = sent[-1]  # one producer, one partition: the last has the highest offset

    async def delivered(self) -> None:
        """Wait for every send and write so far, then commit the table writes with their changelog offsets."""
        pending, self._pending = self._pending, []
        written, self._written = self._written, {}
        await delivered(pending)
        for store, last_sends in written.items():
            store.commit(changelog_offsets(last_sends))


def changelog_offsets(last_sends: Mapping[int, Awaitable[Any]]) -> dict[int, int]:
    """The changelog offset of each partition's last delivered send (partitions whose offset the producer did not
    report are left out: their records are read again after a restart, to the same state)."""
    offsets = {}
    for partition, send in last_sends.items():
        metadata = cast("asyncio.Future[Any]", send).result()
        offset = getattr(metadata, "offset", None)
        if isinstance(offset, int) and offset >= 0:
            offsets[partition] = offset
    return offsets
