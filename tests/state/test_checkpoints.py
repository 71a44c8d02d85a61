"""When a store's changelog offset can be trusted: the records past it bring the data to the changelog's state."""

from __future__ import annotations

import pytest

from stream.state.checkpoints import Checkpoint, untrusted

HOUR_MS = 3_600_000


@pytest.mark.parametrize(("checkpoint", "earliest", "end", "age_h", "why"), [
    (Checkpoint(40, 0), 0, 41, 1, None),  # nothing to read
    (Checkpoint(40, 0), 0, 90, 1, None),  # 49 records past it (another worker's, or this one's undelivered)
    (Checkpoint(40, 0), 41, 90, 1, None),  # the records before it deleted: none missing
    (Checkpoint(40, 0), None, None, 1, None),  # bounds unknown: read on
    (Checkpoint(40, 0), 42, 90, 1, "were deleted"),
    (Checkpoint(40, 0), 0, 40, 1, "ends at offset 40"),
    (Checkpoint(40, 0), 0, 41, 21, "h old"),
])
def test_untrusted(checkpoint: Checkpoint, earliest: int | None, end: int | None, age_h: int, why: str | None
                   ) -> None:
    found = untrusted(checkpoint, earliest, end, age_h * HOUR_MS, 20 * HOUR_MS)
    assert (found is None) if why is None else (found is not None and why in found), found
