"""The bench's progress lines on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Progress lines on stderr, at most one a second (but the final ones)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._last = 0.0

    def show(self, message: str, force: bool = False) -> None:
        """Print ``message`` if enough time passed since the last one (or ``force``)."""
        now = time.monotonic()
        if force or now - self._last >= self._interval_s:
            self._last = now
            print(f"bench: {message}", file=sys.stderr, flush=True)
