"""A table as the stages see it: reads from the store, writes collected per batch and applied by the caller.

Collecting writes lets the agent order a batch's outputs and its state. The
entity stage delivers its cell deltas *before* persisting the state that
produced them: a replayed batch recomputes the same deltas at the same
positions, and the cell stage skips what it already has. The cell stage does
the opposite for KPI records, which have no position to deduplicate by: it
persists first and sends records derived from the persisted state.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, Protocol

import orjson

from stream.core import jsonbytes
from stream.core.watermark import WatermarkJoin

# Tables keep each owned partition's watermark state under a reserved key beside their own keys.
WATERMARK_KEY_PREFIX = b"\x00wm:"


class Store(Protocol):
    """The read side of a table (a Faust table or a dict in tests); keys and values are bytes."""

    def get(self, key: Any, /) -> Any:
        """The stored value, or None."""

    def items(self) -> Iterable[tuple[Any, Any]]:
        """All stored (key, value) pairs."""


class BatchWrites:
    """Pending writes of one batch over a store; ``None`` is a deletion."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        """Read through the batch's own writes."""
        if key in self.pending:
            return self.pending[key]
        stored: bytes | None = self.store.get(key)
        return stored

    def set(self, key: bytes, value: bytes | None) -> None:
        """Write (or delete, with None) at the end of the batch."""
        self.pending[key] = value

    def take(self) -> dict[bytes, bytes | None]:
        """The batch's writes, leaving none pending."""
        taken, self.pending = self.pending, {}
        return taken


def apply_writes(store: MutableMapping[bytes, bytes], writes: dict[bytes, bytes | None]) -> None:
    """Apply collected writes to a plain mapping (tests and the in-memory flow)."""
    for key, value in writes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def watermark_key(partition: int, name: str = "") -> bytes:
    """Reserved table key of a partition's watermark state (``name`` tells several joins apart)."""
    return WATERMARK_KEY_PREFIX + str(partition).encode() + name.encode()


def restore_join(store: Store, partition: int, expected: frozenset[str], name: str = "") -> WatermarkJoin:
    """The partition's watermark join as last persisted, or a new one."""
    join = WatermarkJoin(expected)
    stored = store.get(watermark_key(partition, name))
    if stored is not None:
        doc = orjson.loads(stored)
        join.progress.update(doc["p"])
        join.floor = doc["f"]
    return join


def persist_join(writes: BatchWrites, partition: int, join: WatermarkJoin, name: str = "") -> None:
    """Write the partition's watermark join with the batch."""
    writes.set(watermark_key(partition, name), jsonbytes.dumps({"p": join.progress, "f": join.floor}))
