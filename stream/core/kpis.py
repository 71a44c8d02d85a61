"""Reading KPIs out of cells: values, the contract's record shape, keys and revisions."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from stream.core.cells import CONVERSION_TIME, CellId, CellState, step_name
from stream.core.funnel import LEAD_STAGE, LOST_STAGE
from stream.core.money import MICROS_PER_UNIT
from stream.core.quantiles import median, nearest_rank
from stream.core.timeutil import format_duration, format_rfc3339

# Upper bounds (seconds) of the time-to-conversion histogram in KPI records and
# on /metrics: B2B steps take from minutes (lead -> MQL scoring) to months
# (opportunity -> won), so the buckets are spread over that range.
CONVERSION_TIME_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400,
                           60 * 86400, 90 * 86400, 180 * 86400)

FAMILY_COST_PER_LEAD = "cost-per-lead"
FAMILY_CONVERSION_RATE = "conversion-rate"
FAMILY_TIME_TO_CONVERSION = "time-to-conversion"
FAMILY_VOLUME = "volume"
FAMILIES = (FAMILY_COST_PER_LEAD, FAMILY_CONVERSION_RATE, FAMILY_TIME_TO_CONVERSION, FAMILY_VOLUME)

_SIX_PLACES = Decimal("0.000001")


def ratio(numerator: float | int | Decimal, denominator: float | int | Decimal) -> float | None:
    """numerator / denominator, or None where the denominator is zero (never 0, NaN or infinity)."""
    if not denominator:
        return None
    return float(Decimal(numerator) / Decimal(denominator))


def cost_per_lead(spend_micros: int, leads: int) -> float | None:
    """Spend in the window divided by leads created in it, in the reporting currency."""
    if leads <= 0:
        return None
    value = (Decimal(spend_micros) / MICROS_PER_UNIT / leads).quantize(_SIX_PLACES, rounding=ROUND_HALF_EVEN)
    return float(value)


def conversion_rate(entered_to: int, entered_from: int) -> float | None:
    """Leads that entered B in W divided by leads that entered A in W."""
    return ratio(entered_to, entered_from)


def conversion_stats(samples_ms: list[int]) -> dict[str, Any]:
    """Count, mean, median and p90 in seconds, with a cumulative histogram, of sorted samples."""
    count = len(samples_ms)
    histogram: dict[str, int] = {}
    index = 0
    for bound in CONVERSION_TIME_BUCKETS:
        while index < count and samples_ms[index] <= bound * 1000:
            index += 1
        histogram[str(bound)] = index
    histogram["+Inf"] = count
    seconds = [value / 1000 for value in samples_ms]
    mean = sum(seconds) / count if count else None
    middle = median(samples_ms)
    p90 = nearest_rank(samples_ms, 0.9)
    return {"count": count, "mean": mean, "median": None if middle is None else middle / 1000,
            "p90": None if p90 is None else p90 / 1000, "histogram": histogram}


@dataclass(frozen=True, slots=True)
class KpiRecord:
    """One record for a ``kpi-<family>`` topic, with its compaction key."""

    family: str
    key: str
    record: dict[str, Any]


def record_key(kpi: str, size_ms: int, start_ms: int, dimensions: dict[str, str]) -> str:
    """The same string for every revision of one (kpi, window size, window start, dimensions)."""
    dims = orjson.dumps(dimensions, option=orjson.OPT_SORT_KEYS).decode()
    return f"{kpi}|{format_duration(size_ms)}|{format_rfc3339(start_ms)}|{dims}"


def _base_dimensions(cell: CellId) -> dict[str, str]:
    dims: dict[str, str] = {}
    if cell.channel is not None:
        dims["channel"] = cell.channel
    if cell.campaign is not None:
        dims["campaign"] = cell.campaign
    return dims


def _candidates(cell: CellId, state: CellState, funnel: tuple[str, ...], currency: str) -> list[tuple[
        str, str, dict[str, str], Any, Any, float | None, str, dict[str, Any] | None]]:
    """(family, kpi, dimensions, numerator, denominator, value, unit, stats) for everything the cell holds."""
    base = _base_dimensions(cell)
    found: list[tuple[str, str, dict[str, str], Any, Any, float | None, str, dict[str, Any] | None]] = []
    steps = list(zip(funnel, funnel[1:], strict=False))
    if cell.family == CONVERSION_TIME:
        for from_stage, to_stage in steps:
            samples = state.samples.get(step_name(from_stage, to_stage), [])
            stats = conversion_stats(samples)
            dims = {"from_stage": from_stage, "to_stage": to_stage, **base}
            total = sum(samples) / 1000
            found.append((FAMILY_TIME_TO_CONVERSION, "time_to_conversion", dims, total, len(samples),
                          stats["median"], "seconds", stats))
        return found
    counts = state.counts
    leads = counts.get(LEAD_STAGE, 0)
    spend = state.spend_micros / MICROS_PER_UNIT
    found.append((FAMILY_COST_PER_LEAD, "cost_per_lead", base, spend, leads,
                  cost_per_lead(state.spend_micros, leads), currency, None))
    for stage in (*funnel, LOST_STAGE):
        entered = counts.get(stage, 0)
        found.append((FAMILY_VOLUME, f"{stage}_volume", base, entered, None, float(entered), "leads", None))
    for from_stage, to_stage in steps:
        dims = {"from_stage": from_stage, "to_stage": to_stage, **base}
        entered_to, entered_from = counts.get(to_stage, 0), counts.get(from_stage, 0)
        found.append((FAMILY_CONVERSION_RATE, "conversion_rate", dims, entered_to, entered_from,
                      conversion_rate(entered_to, entered_from), "ratio", None))
    return found


def changed_records(
    cell: CellId, state: CellState, funnel: tuple[str, ...], currency: str, emitted_at_ms: int
) -> list[KpiRecord]:
    """Records for the KPIs of ``cell`` whose content changed since last sent; bumps their revisions.

    A KPI with nothing behind it (zero numerator and denominator) is not sent
    until it has something, but once sent it is kept up to date, including
    back to zero after a correction.
    """
    records: list[KpiRecord] = []
    window = {"size": format_duration(cell.size_ms), "start": format_rfc3339(cell.start_ms),
              "end": format_rfc3339(cell.end_ms)}
    for family, kpi, dims, numerator, denominator, value, unit, stats in _candidates(
            cell, state, funnel, currency):
        key = record_key(kpi, cell.size_ms, cell.start_ms, dims)
        previous = state.emitted.get(key)
        if previous is None and not numerator and not denominator:
            continue
        signature = [numerator, denominator, value, state.final, stats]
        if previous is not None and previous[1] == signature:
            continue
        revision = 1 if previous is None else previous[0] + 1
        state.emitted[key] = [revision, signature]
        record: dict[str, Any] = {
            "kpi": kpi, "window": window, "dimensions": dims, "value": value, "numerator": numerator,
            "denominator": denominator, "unit": unit, "final": state.final, "revision": revision,
            "emitted_at": format_rfc3339(emitted_at_ms),
        }
        if stats is not None:
            record["stats"] = stats
        records.append(KpiRecord(family, key, record))
    return records
