"""Exact order statistics over a sorted sample list."""

from __future__ import annotations

import math
from bisect import bisect_left, insort


def add_sorted(samples: list[int], value: int) -> None:
    """Insert ``value`` keeping ``samples`` sorted."""
    insort(samples, value)


def remove_sorted(samples: list[int], value: int) -> bool:
    """Remove one occurrence of ``value``; False when it is not there."""
    index = bisect_left(samples, value)
    if index < len(samples) and samples[index] == value:
        del samples[index]
        return True
    return False


def median(samples: list[int]) -> float | None:
    """Median of sorted samples (mean of the middle two for an even count); None when empty."""
    count = len(samples)
    if count == 0:
        return None
    middle = count // 2
    if count % 2:
        return float(samples[middle])
    return (samples[middle - 1] + samples[middle]) / 2


def nearest_rank(samples: list[int], fraction: float) -> float | None:
    """Percentile by the nearest-rank method (an observed value, never interpolated); None when empty."""
    if not samples:
        return None
    rank = max(1, math.ceil(fraction * len(samples)))
    return float(samples[rank - 1])
