"""Multi-touch attribution: how a lead's credit is shared among the page views (touches) before it.

Credit is kept in integer micro-credits (one lead = 1,000,000) and money in
micro-units, shared out by largest remainder, so per model the credits of a
lead sum to exactly one lead and its revenue exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

MODELS = ("first_touch", "last_touch", "linear", "position_based", "time_decay")
LEAD_CREDIT = 1_000_000  # micro-credits in one lead


@dataclass(frozen=True, slots=True)
class Touch:
    """A page view of the visitor: when, and the channel and campaign of that visit."""

    ts: int
    channel: str
    campaign: str | None
    event_id: str = ""  # the page view's id: a replayed view is recognised and not recorded twice


@dataclass(frozen=True, slots=True)
class AttributionFact:
    """``amount`` of ``kind`` (leads, pipeline, revenue) credited at ``ts`` to a touch channel under ``model``."""

    model: str
    channel: str
    campaign: str | None
    kind: str
    ts: int
    amount: int


def weights(model: str, touches: list[Touch], converted_at: int, half_life_ms: int) -> list[float]:
    """Each touch's share of the credit under ``model``; touches are in time order and sum to 1."""
    n = len(touches)
    if n == 0:
        return []
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "linear":
        return [1.0 / n] * n
    if model == "position_based":
        # 40 % first, 40 % last, 20 % shared by the middle; with one or two touches they share it all.
        if n <= 2:
            return [1.0 / n] * n
        return [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]
    if model == "time_decay":
        raw = [math.pow(2.0, -(converted_at - touch.ts) / half_life_ms) for touch in touches]
        total = sum(raw)
        return [value / total for value in raw]
    raise ValueError(f"unknown attribution model {model!r}")


def share(total: int, shares: list[float]) -> list[int]:
    """Split the integer ``total`` by ``shares`` (summing to 1) so the parts sum to ``total`` exactly.

    Largest remainder: each part gets the floor of its exact share, and the units
    left go to the largest remainders (the earlier touch on a tie).
    """
    exact = [total * part for part in shares]
    parts = [math.floor(value) for value in exact]
    left = total - sum(parts)
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def credit(model: str, touches: list[Touch], converted_at: int, half_life_ms: int, kind: str, ts: int,
           amount: int) -> Counter[AttributionFact]:
    """The facts crediting ``amount`` of ``kind`` at ``ts`` to the touches' channels and campaigns."""
    parts = share(amount, weights(model, touches, converted_at, half_life_ms))
    by_target: dict[tuple[str, str | None], int] = {}
    for touch, part in zip(touches, parts, strict=True):
        target = (touch.channel, touch.campaign)
        by_target[target] = by_target.get(target, 0) + part
    return Counter(AttributionFact(model, channel, campaign, kind, ts, part)
                   for (channel, campaign), part in sorted(by_target.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
                   if part)
