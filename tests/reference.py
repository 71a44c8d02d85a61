"""An independent batch computation of the core KPIs, written from KPIS.md and CONTRACT.md for the tests.

It shares no code with the streaming implementation: it takes the raw input
messages, keeps the valid first-seen ones, and computes every KPI record's
numerator and denominator directly.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

FUNNEL = ("lead", "mql", "sal", "sql", "opportunity", "won")
STAGES = {"mql", "sal", "sql", "opportunity", "won", "lost"}
HOUR = 3_600_000
DAY = 86_400_000


def _ms(ts: object) -> int | None:
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int):
        return ts
    if not isinstance(ts, str) or not (ts.endswith("Z") or "+" in ts[10:] or "-" in ts[10:]):
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if moment.tzinfo is None else round(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    """RFC 3339 UTC with second precision."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _amount_ok(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return False
    return amount.is_finite() and amount >= 0


def valid_first_seen(messages: list[tuple[str, bytes]], rates: dict[str, Decimal],
                     max_bytes: int = 65536) -> list[tuple[str, dict]]:
    """The messages that count: decodable objects with the required fields, first per (topic, event_id)."""
    required = {"page-views": ("visitor_id", "url"), "leads": ("lead_id", "channel"),
                "stage-changes": ("lead_id", "stage"), "spend": ("channel", "amount", "currency")}
    seen: set[tuple[str, str]] = set()
    kept = []
    for topic, raw in messages:
        if len(raw) > max_bytes:
            continue
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("event_id"), str) or _ms(doc.get("ts")) is None:
            continue
        if any(not isinstance(doc.get(name), (str, int, float)) for name in required[topic]):
            continue
        if topic == "stage-changes" and doc["stage"] not in STAGES:
            continue
        if "amount" in doc and ("currency" not in doc or not _amount_ok(doc["amount"])):
            continue
        if "currency" in doc and doc["currency"] != "USD" and doc["currency"] not in rates:
            continue
        key = (topic, doc["event_id"])
        if key in seen:
            continue
        seen.add(key)
        kept.append((topic, doc))
    return kept


def compute(messages: list[tuple[str, bytes]], rates: dict[str, Decimal], sizes: tuple[int, ...] = (HOUR, DAY)
            ) -> dict[tuple[str, int, int, tuple[tuple[str, str], ...]], tuple[object, object]]:
    """(kpi, size, start, sorted dims) -> (numerator, denominator) for every KPI with something behind it."""
    events = valid_first_seen(messages, rates)
    created: dict[str, tuple[int, str, str | None]] = {}
    observed: dict[str, dict[str, int]] = defaultdict(dict)
    spend: list[tuple[int, str, str | None, Decimal]] = []
    for topic, doc in events:
        ts = _ms(doc["ts"])
        assert ts is not None
        if topic == "leads":
            if doc["lead_id"] not in created or ts < created[doc["lead_id"]][0]:
                created[doc["lead_id"]] = (ts, doc["channel"], doc.get("campaign"))
        elif topic == "stage-changes":
            stages = observed[doc["lead_id"]]
            stages[doc["stage"]] = min(ts, stages.get(doc["stage"], ts))
        elif topic == "spend":
            rate = Decimal(1) if doc["currency"] == "USD" else rates[doc["currency"]]
            spend.append((ts, doc["channel"], doc.get("campaign"), Decimal(str(doc["amount"])) * rate))
    counts: dict[tuple, int] = defaultdict(int)
    money: dict[tuple, Decimal] = defaultdict(Decimal)
    durations: dict[tuple, list[int]] = defaultdict(list)

    def dims_of(channel: str, campaign: str | None, with_campaign: bool) -> list[tuple[tuple[str, str], ...]]:
        levels = [(), (("channel", channel),)]
        if with_campaign and campaign is not None:
            levels.append((("campaign", campaign), ("channel", channel)))
        return levels

    for lead_id, (created_ts, channel, campaign) in created.items():
        seen = dict(observed.get(lead_id, {}))
        seen["lead"] = min(created_ts, seen.get("lead", created_ts))
        entered: dict[str, int] = {}
        for index, stage in enumerate(FUNNEL):
            later = [seen[s] for s in FUNNEL[index:] if s in seen]
            if later:
                entered[stage] = min(later)
        if "lost" in seen:
            entered["lost"] = seen["lost"]
        for size in sizes:
            for stage, ts in entered.items():
                for dims in dims_of(channel, campaign, True):
                    counts[(stage, size, ts - ts % size, dims)] += 1
            for a, b in zip(FUNNEL, FUNNEL[1:], strict=False):
                if a in entered and b in entered:
                    ts = entered[b]
                    for dims in dims_of(channel, campaign, False):
                        durations[(a, b, size, ts - ts % size, dims)].append(entered[b] - entered[a])
    for ts, channel, campaign, amount in spend:
        for size in sizes:
            for dims in dims_of(channel, campaign, True):
                money[(size, ts - ts % size, dims)] += amount
    result: dict[tuple[str, int, int, tuple[tuple[str, str], ...]], tuple[object, object]] = {}
    cells = {(size, start, dims) for (_, size, start, dims) in counts} | set(money)
    for size, start, dims in cells:
        leads = counts.get(("lead", size, start, dims), 0)
        spent = money.get((size, start, dims), Decimal(0))
        if leads or spent:
            result[("cost_per_lead", size, start, dims)] = (float(spent), leads)
        for stage in (*FUNNEL, "lost"):
            n = counts.get((stage, size, start, dims), 0)
            if n:
                result[(f"{stage}_volume", size, start, dims)] = (n, None)
        for a, b in zip(FUNNEL, FUNNEL[1:], strict=False):
            num, den = counts.get((b, size, start, dims), 0), counts.get((a, size, start, dims), 0)
            if num or den:
                key_dims = tuple(sorted((*dims, ("from_stage", a), ("to_stage", b))))
                result[("conversion_rate", size, start, key_dims)] = (num, den)
    for (a, b, size, start, dims), values in durations.items():
        key_dims = tuple(sorted((*dims, ("from_stage", a), ("to_stage", b))))
        result[("time_to_conversion", size, start, key_dims)] = (sum(values) / 1000, len(values))
    return result


def median_seconds(values_ms: list[int]) -> float:
    """Median in seconds, mean of the middle two for an even count."""
    ordered = sorted(values_ms)
    mid = len(ordered) // 2
    return (ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2) / 1000


def p90_seconds(values_ms: list[int]) -> float:
    """90th percentile by nearest rank, in seconds."""
    ordered = sorted(values_ms)
    return ordered[max(1, math.ceil(0.9 * len(ordered))) - 1] / 1000


def from_records(records: list[dict]) -> dict[tuple[str, int, int, tuple[tuple[str, str], ...]], tuple[object, object]]:
    """The same shape from the last KPI record per key, for comparison with :func:`compute`."""
    sizes = {"1h": HOUR, "1d": DAY}
    out = {}
    for record in records:
        start = _ms(record["window"]["start"])
        assert start is not None
        key = (record["kpi"], sizes[record["window"]["size"]], start, tuple(sorted(record["dimensions"].items())))
        if record["kpi"].endswith("_volume") and not record["numerator"]:
            continue
        if record["kpi"] in ("conversion_rate", "time_to_conversion", "cost_per_lead") and not (
                record["numerator"] or record["denominator"]):
            continue
        out[key] = (record["numerator"], record["denominator"])
    return out
