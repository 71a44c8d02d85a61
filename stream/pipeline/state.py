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

from stream.pipeline.keys import CHUNK_KEY_PREFIX, chunk_key

# Largest value written as one record: well under the 1 MB a Kafka message may have by default.
CHUNK_BYTES = 512 * 1024
_CHUNKED = b"#"  # first byte of a stored value that names its chunks; JSON documents start with '{' or '['


class Reader(Protocol):
    """Reads by key: a table, or a batch's writes over it."""

    def get(self, key: Any, /) -> Any:
        """The stored value, or None."""


class Store(Reader, Protocol):
    """The read side of a table (a Faust table or a dict in tests); keys and values are bytes."""

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
        """Write (or delete, with None) at the end of the batch, after the writes set before this one."""
        self.pending.pop(key, None)
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


def _chunk_ref(stored: bytes | None) -> tuple[int, int] | None:
    """(generation, number of chunks) of a stored chunked value; None for a plain one."""
    if stored is None or not stored.startswith(_CHUNKED):
        return None
    generation, count = stored[1:].split(b":")
    return int(generation), int(count)


def read_value(store: Reader, key: bytes) -> bytes | None:
    """A value as written by ``write_value``: whole again if it was chunked."""
    stored: bytes | None = store.get(key)
    ref = _chunk_ref(stored)
    if ref is None:
        return stored
    generation, count = ref
    return b"".join(store.get(chunk_key(key, generation, index)) for index in range(count))


def write_value(writes: BatchWrites, key: bytes, value: bytes | None, limit: int = CHUNK_BYTES) -> None:
    """Write ``value`` (None: delete it) under ``key``, in parts of at most ``limit`` bytes if it is larger.

    A value grows past what one Kafka message may carry (a busy window's time-to-conversion samples: 1.1 MB
    for a day of 195,000 leads), and a changelog write of it fails. Its parts go under keys of a new
    generation, then the key itself names them, then the parts of the previous generation are deleted: in the
    changelog's order, a restart finds either the old value whole or the new one whole.
    """
    previous = _chunk_ref(writes.get(key))
    if value is not None and len(value) > limit:
        generation = previous[0] + 1 if previous is not None else 1
        count = -(-len(value) // limit)
        for index in range(count):
            writes.set(chunk_key(key, generation, index), value[index * limit:(index + 1) * limit])
        writes.set(key, _CHUNKED + b"%d:%d" % (generation, count))
    else:
        writes.set(key, value)
    if previous is not None:
        old_generation, old_count = previous
        for index in range(old_count):
            writes.set(chunk_key(key, old_generation, index), None)


class ChunkCensus:
    """What a scan of a table finds of chunked values: the chunk keys, and the chunk keys stored values name."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._named: set[bytes] = set()

    def see(self, key: bytes, value: bytes) -> bool:
        """Note one stored pair; True when it is a chunk, not a value of the table's own."""
        if key.startswith(CHUNK_KEY_PREFIX):
            self._chunks.append(key)
            return True
        if (ref := _chunk_ref(value)) is not None:
            self._named.update(chunk_key(key, ref[0], index) for index in range(ref[1]))
        return False

    def orphans(self) -> list[bytes]:
        """Chunk keys no stored value names: left by a stop between writing a new value and deleting the old
        parts."""
        return [key for key in self._chunks if key not in self._named]
