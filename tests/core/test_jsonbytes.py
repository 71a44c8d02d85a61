"""JSON bytes for kept values: the same text as orjson's, in allocations of their own size."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from stream.core import jsonbytes


@pytest.mark.parametrize(
    "value", [[1, 2], {"p": {"page-views:0": 17}, "f": None}, "x" * 10_000, {"t": [[1, "é", None]]}])
def test_the_text_is_orjsons(value: object) -> None:
    assert jsonbytes.dumps(value) == orjson.dumps(value)


def test_kept_values_take_about_their_own_length() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [jsonbytes.dumps({"visitor": n}) for n in range(1_000)]
        per_value = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    # 16-byte documents: a bytes object of their size is about 50 bytes, plus the list's slot; orjson's own result
    # keeps a buffer of 4 KiB.
    assert per_value < 200, f"{per_value:.0f} bytes per 16-byte value"
