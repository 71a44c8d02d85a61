"""Table values too large for one changelog message are written in parts, and read back whole."""

from __future__ import annotations

import orjson
import pytest

from stream.core.cells import CONVERSION_TIME
from stream.pipeline.cells import CellStage
from stream.pipeline.eventtime.sources import HOLD
from stream.pipeline.keys import CHUNK_KEY_PREFIX, chunk_key
from stream.pipeline.state import (
    BatchWrites,
    ChunkCensus,
    apply_writes,
    read_value,
    write_value,
)
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from stream.stages import cell_config
from tests.eventset import DAY_START, heartbeats, mixed
from tests.pipeline.test_local_flow import KINDS, RATES
from tests.reference import compute, from_records, mismatches

LIMIT = 100
KEY = b'["cell",1]'


def _written(store: dict[bytes, bytes], value: bytes | None) -> dict[bytes, bytes | None]:
    writes = BatchWrites(store)
    write_value(writes, KEY, value, LIMIT)
    return writes.take()


@pytest.mark.parametrize("size", [0, 1, LIMIT, LIMIT + 1, 2 * LIMIT, 5 * LIMIT + 7])
def test_a_value_of_any_size_reads_back_whole_with_no_record_over_the_limit(size: int) -> None:
    store: dict[bytes, bytes] = {}
    value = bytes(range(256)) * (size // 256) + bytes(size % 256)
    writes = _written(store, value)
    assert all(v is None or len(v) <= LIMIT for v in writes.values())
    assert len(writes) == (1 if size <= LIMIT else 1 + -(-size // LIMIT))
    apply_writes(store, writes)
    assert read_value(store, KEY) == value


@pytest.mark.parametrize(("old_size", "new_size"), [(350, 120), (350, 40), (40, 350), (350, 350), (350, None)])
def test_a_stop_anywhere_in_the_writes_leaves_the_old_value_or_the_new_one_whole(
        old_size: int, new_size: int | None) -> None:
    store: dict[bytes, bytes] = {}
    old = b"o" * old_size
    apply_writes(store, _written(store, old))
    new = None if new_size is None else b"n" * new_size
    writes = list(_written(store, new).items())
    # The changelog keeps the writes in this order; a stop may come after any of them.
    for stop in range(len(writes) + 1):
        replica = dict(store)
        apply_writes(replica, dict(writes[:stop]))
        assert read_value(replica, KEY) in (old, new)
    apply_writes(store, dict(writes))
    assert read_value(store, KEY) == new
    # Nothing of the old value is left behind.
    assert [key for key in store if key.startswith(CHUNK_KEY_PREFIX)] == (
        [] if new is None or len(new) <= LIMIT else [key for key, _ in writes if key.startswith(CHUNK_KEY_PREFIX)
                                                     and store.get(key) is not None])
    assert orphan_chunks(store) == []


def test_the_parts_of_a_value_replaced_before_a_stop_are_found_as_orphans() -> None:
    store: dict[bytes, bytes] = {}
    apply_writes(store, _written(store, b"o" * 250))
    old_parts = sorted(key for key in store if key.startswith(CHUNK_KEY_PREFIX))
    writes = _written(store, b"n" * 20)
    # Stopped after the new value, before the old parts were deleted.
    apply_writes(store, {key: value for key, value in writes.items() if value is not None})
    assert read_value(store, KEY) == b"n" * 20
    assert sorted(orphan_chunks(store)) == old_parts


def orphan_chunks(store: dict[bytes, bytes]) -> list[bytes]:
    """Chunk keys no stored value names, from a scan of the whole table (as the cell stage scans it)."""
    census = ChunkCensus()
    for key, value in store.items():
        census.see(key, value)
    return census.orphans()


def _flow_over(messages: list[tuple[str, bytes]], chunk_bytes: int) -> LocalFlow:
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "1"})
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    flow.cells = CellStage(cell_config(settings), flow.cell_table, chunk_bytes=chunk_bytes)
    for start in range(0, len(messages), 5):
        flow.send_batch([(KINDS[topic], raw, 0) for topic, raw in messages[start:start + 5]])
    flow.settle()
    return flow


def _restored_records(flow: LocalFlow, chunk_bytes: int) -> dict[str, dict]:
    """What a new owner of the cell partition sends when it restores the table: the last record of each cell."""
    restarted = CellStage(cell_config(flow.settings), dict(flow.cell_table), chunk_bytes=chunk_bytes)
    nothing = orjson.dumps({"src": 0, "d": [], "wm": HOLD})
    return {record.key: {**record.record, "emitted_at": None}
            for record in restarted.process(0, [(10**6, nothing)], DAY_START).records}


def test_cells_larger_than_the_limit_give_the_same_kpis_and_restore_whole() -> None:
    """Time-to-conversion cells keep every sample: with a 2,000-byte limit the busy ones are chunked."""
    messages, _ = mixed()
    flow, whole = _flow_over(messages, 2000), _flow_over(messages, 10**9)
    stored = {key: value for key, value in flow.cell_table.items() if key.startswith(CHUNK_KEY_PREFIX)}
    assert stored, "no cell grew past the limit: the test proves nothing"
    assert any(CONVERSION_TIME.encode() in key for key in stored)
    assert max(len(value) for value in flow.cell_table.values()) <= 2000
    assert not [key for key in whole.cell_table if key.startswith(CHUNK_KEY_PREFIX)]
    assert flow.records == whole.records
    # A new owner restores every cell whole, chunked or not: it sends each one's last record again, the same.
    restored = _restored_records(flow, 2000)
    assert restored == _restored_records(whole, 10**9)
    assert restored == {key: {**flow.records[key], "emitted_at": None} for key in restored}
    # Closed and then dropped, the chunked cells leave no part behind; the results are exact.
    chunked = {key.split(b":", 3)[3] for key in stored}
    settings = flow.settings
    beats = heartbeats(list(settings.input_topics.values()), 1, DAY_START + 3 * 86_400_000)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in
                     heartbeats(list(settings.input_topics.values()), 1, DAY_START + 6 * 86_400_000)])
    flow.tick()
    dropped = {cell for cell in chunked if cell not in flow.cell_table}
    assert dropped, "no chunked cell was dropped: the test proves nothing"
    assert not [key for key in flow.cell_table
                if key.startswith(CHUNK_KEY_PREFIX) and key.split(b":", 3)[3] in dropped]
    assert orphan_chunks(flow.cell_table) == []
    want = compute(messages + [(topic, raw) for topic, _, raw in beats], RATES)
    data_days = DAY_START + 2 * 86_400_000  # the set's windows; the heartbeats' own were dropped since
    got = [record for record in flow.records.values() if record["window"]["start"] < "2025-11-24"]
    assert not mismatches(from_records(got), {key: value for key, value in want.items() if key[2] < data_days})


def test_a_new_owner_deletes_the_orphaned_parts_of_its_own_cells_and_nothing_else() -> None:
    messages, _ = mixed()
    flow = _flow_over(messages, 2000)
    table = dict(flow.cell_table)
    chunked = sorted(key for key, value in table.items() if read_value(table, key) != value)
    assert chunked, "no cell grew past the limit: the test proves nothing"
    # Parts of an older generation left by a stop between the new value and the deletion of the old parts.
    orphan = chunk_key(chunked[0], 0, 0)
    table[orphan] = b"left behind"
    restarted = CellStage(cell_config(flow.settings), table, chunk_bytes=2000)
    nothing = orjson.dumps({"src": 0, "d": [], "wm": HOLD})
    writes = restarted.process(0, [(10**6, nothing)], DAY_START).writes
    assert {key: value for key, value in writes.items() if key.startswith(CHUNK_KEY_PREFIX)} == {orphan: None}
