"""Reading KPIs out of cells: values, the contract's record shape, keys and revisions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from stream.core.attribution import LEAD_CREDIT
from stream.core.cells import (
    ASSET,
    ATTRIBUTION,
    COHORT,
    CONVERSION_TIME,
    FUNNEL,
    OWNER,
    SHARE,
    SHARE_ALL,
    TRAFFIC,
    CellId,
    CellState,
    step_name,
)
from stream.core.funnel import LEAD_STAGE, LOST_STAGE
from stream.core.money import MICROS_PER_UNIT
from stream.core.quantiles import median, nearest_rank
from stream.core.targets import Target, attainment, elapsed_share, pacing
from stream.core.timeutil import format_duration, format_rfc3339
from stream.core.windows import Windows

# Upper bounds (seconds) of the time-to-conversion histogram in KPI records and
# on /metrics: B2B steps take from minutes (lead -> MQL scoring) to months
# (opportunity -> won), so the buckets are spread over that range.
CONVERSION_TIME_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400,
                           60 * 86400, 90 * 86400, 180 * 86400)

FAMILY_COST_PER_LEAD = "cost-per-lead"
FAMILY_CONVERSION_RATE = "conversion-rate"
FAMILY_TIME_TO_CONVERSION = "time-to-conversion"
FAMILY_VOLUME = "volume"
FAMILY_COST = "cost"
FAMILY_QUALITY = "lead-quality"
FAMILY_REVENUE = "revenue"
FAMILY_COHORT = "cohort-conversion"
FAMILY_TRAFFIC = "traffic"
FAMILY_VISIT_TO_LEAD = "visit-to-lead"
FAMILY_ATTRIBUTION = "attribution"
FAMILY_TARGETS = "targets"
TARGET_KPIS = ("target_attainment", "target_pacing")
FAMILIES = (FAMILY_COST_PER_LEAD, FAMILY_CONVERSION_RATE, FAMILY_TIME_TO_CONVERSION, FAMILY_VOLUME, FAMILY_COST,
            FAMILY_QUALITY, FAMILY_REVENUE, FAMILY_COHORT, FAMILY_TRAFFIC, FAMILY_VISIT_TO_LEAD,
            FAMILY_ATTRIBUTION, FAMILY_TARGETS)

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
    return money_ratio(spend_micros, leads)


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


def record_key(kpi: str, size: int, start_ms: int, dimensions: dict[str, str], windows: Windows | None = None) -> str:
    """The same string for every revision of one (kpi, window size, window start, dimensions).

    The window's part is written in the reporting zone (``windows``; None: UTC, as before calendars).
    """
    return _record_key(kpi, _key_part(size, start_ms, windows), tuple(dimensions.items()))


def _key_part(size: int, start_ms: int, windows: Windows | None) -> str:
    """The window's part of a record key (see :func:`record_key`)."""
    return windows.key_part(size, start_ms) if windows is not None else _utc_key_part(size, start_ms)


@lru_cache(maxsize=65536)
def _record_key(kpi: str, window: str, dimensions: tuple[tuple[str, str], ...]) -> str:
    dims = orjson.dumps(dict(dimensions), option=orjson.OPT_SORT_KEYS).decode()
    return f"{kpi}|{window}|{dims}"


def _utc_key_part(size: int, start_ms: int) -> str:
    return f"{format_duration(size)}|{format_rfc3339(start_ms)}"


def _base_dimensions(cell: CellId) -> dict[str, str]:
    dims: dict[str, str] = {}
    if cell.channel is not None:
        dims["channel"] = cell.channel
    if cell.campaign is not None:
        dims["campaign"] = cell.campaign
    return dims


def _money(micros: int) -> float:
    return micros / MICROS_PER_UNIT


def money_ratio(numerator_micros: int, denominator: int) -> float | None:
    """Money per unit (cost per lead, deal size, ...), exact to the micro-unit; None for a zero denominator."""
    if denominator == 0:
        return None
    value = (Decimal(numerator_micros) / MICROS_PER_UNIT / denominator).quantize(_SIX_PLACES, rounding=ROUND_HALF_EVEN)
    return float(value)


class Quotient(NamedTuple):
    """A ratio KPI as its record carries it: numerator, denominator, and value (None for a zero denominator)."""

    numerator: float | int
    denominator: float | int
    value: float | None


def _cost_per_lead_of(state: CellState) -> Quotient:
    leads = state.counts.get(LEAD_STAGE, 0)
    return Quotient(_money(state.spend_micros), leads, cost_per_lead(state.spend_micros, leads))


def _cost_per_mql_of(state: CellState) -> Quotient:
    mqls = state.counts.get("mql", 0)
    return Quotient(_money(state.spend_micros), mqls, money_ratio(state.spend_micros, mqls))


def _cost_per_acquisition_of(state: CellState) -> Quotient:
    won = state.counts.get("won", 0)
    return Quotient(_money(state.spend_micros), won, money_ratio(state.spend_micros, won))


def _win_rate_of(state: CellState) -> Quotient:
    won, lost = state.counts.get("won", 0), state.counts.get(LOST_STAGE, 0)
    return Quotient(won, won + lost, ratio(won, won + lost))


def _roas_of(state: CellState) -> Quotient:
    revenue = state.sums.get("revenue", 0)
    return Quotient(_money(revenue), _money(state.spend_micros), ratio(revenue, state.spend_micros))


# The ratio KPIs of a funnel cell that are also read outside the records (the
# worker's gauges show them), by KPI name. Each is defined here once, and the
# records take it from here too, so a gauge cannot show another value than the
# record of the same cell.
FUNNEL_RATIOS: dict[str, Callable[[CellState], Quotient]] = {
    "cost_per_lead": _cost_per_lead_of,
    "cost_per_mql": _cost_per_mql_of,
    "cost_per_acquisition": _cost_per_acquisition_of,
    "win_rate": _win_rate_of,
    "roas": _roas_of,
}


def step_conversions(state: CellState, funnel: tuple[str, ...]) -> Iterator[tuple[str, str, Quotient]]:
    """(from_stage, to_stage, conversion_rate) for each step of ``funnel``, from a funnel cell."""
    for from_stage, to_stage in zip(funnel, funnel[1:], strict=False):
        entered_to, entered_from = state.counts.get(to_stage, 0), state.counts.get(from_stage, 0)
        yield from_stage, to_stage, Quotient(entered_to, entered_from, conversion_rate(entered_to, entered_from))


Candidate = tuple[str, str, dict[str, str], Any, Any, float | None, str, dict[str, Any] | None]


def _ratio_candidate(family: str, kpi: str, base: dict[str, str], state: CellState, unit: str) -> Candidate:
    numerator, denominator, value = FUNNEL_RATIOS[kpi](state)
    return (family, kpi, base, numerator, denominator, value, unit, None)


def _funnel_candidates(base: dict[str, str], state: CellState, funnel: tuple[str, ...], currency: str,
                       economics: tuple[Decimal, Decimal] | None = None) -> list[Candidate]:
    counts, sums = state.counts, state.sums
    leads, won, opportunities = counts.get(LEAD_STAGE, 0), counts.get("won", 0), counts.get("opportunity", 0)
    spend, revenue, pipeline = state.spend_micros, sums.get("revenue", 0), sums.get("pipeline", 0)
    found: list[Candidate] = [
        _ratio_candidate(FAMILY_COST_PER_LEAD, "cost_per_lead", base, state, currency),
        _ratio_candidate(FAMILY_COST, "cost_per_mql", base, state, currency),
        _ratio_candidate(FAMILY_COST, "cost_per_acquisition", base, state, currency),
        (FAMILY_QUALITY, "lead_to_opportunity", base, opportunities, leads, ratio(opportunities, leads), "ratio",
         None),
        (FAMILY_QUALITY, "lead_to_customer", base, won, leads, ratio(won, leads), "ratio", None),
        (FAMILY_QUALITY, "close_rate", base, won, leads, ratio(won, leads), "ratio", None),
        _ratio_candidate(FAMILY_QUALITY, "win_rate", base, state, "ratio"),
        (FAMILY_REVENUE, "pipeline", base, _money(pipeline), None, _money(pipeline), currency, None),
        (FAMILY_REVENUE, "revenue", base, _money(revenue), None, _money(revenue), currency, None),
        (FAMILY_REVENUE, "average_deal_size", base, _money(revenue), won, money_ratio(revenue, won), currency, None),
        (FAMILY_REVENUE, "average_lead_value", base, _money(revenue), leads, money_ratio(revenue, leads), currency,
         None),
        (FAMILY_REVENUE, "average_revenue_per_customer", base, _money(revenue), won, money_ratio(revenue, won),
         currency, None),
        _ratio_candidate(FAMILY_REVENUE, "roas", base, state, "ratio"),
        (FAMILY_REVENUE, "roi", base, _money(revenue - spend), _money(spend), ratio(revenue - spend, spend),
         "ratio", None),
    ]
    if economics is not None:
        churn, margin = economics
        # Revenue per customer is taken as recurring revenue per churn period.
        margin_revenue = Decimal(revenue) * margin
        lifetime = (margin_revenue / won / churn / MICROS_PER_UNIT) if won else None
        payback = (Decimal(spend) / margin_revenue) if margin_revenue else None
        found.append((FAMILY_REVENUE, "customer_lifetime_value", base, float(margin_revenue / MICROS_PER_UNIT),
                      float(Decimal(won) * churn), None if lifetime is None else float(lifetime), currency, None))
        found.append((FAMILY_REVENUE, "payback_period", base, _money(spend), float(margin_revenue / MICROS_PER_UNIT),
                      None if payback is None else float(payback), "periods", None))
    for stage in (*funnel, LOST_STAGE):
        entered = counts.get(stage, 0)
        found.append((FAMILY_VOLUME, f"{stage}_volume", base, entered, None, float(entered), "leads", None))
    for from_stage, to_stage, (entered_to, entered_from, rate) in step_conversions(state, funnel):
        dims = {"from_stage": from_stage, "to_stage": to_stage, **base}
        found.append((FAMILY_CONVERSION_RATE, "conversion_rate", dims, entered_to, entered_from, rate, "ratio", None))
    return found


def _candidates(cell: CellId, state: CellState, funnel: tuple[str, ...], currency: str,
                economics: tuple[Decimal, Decimal] | None = None) -> list[Candidate]:
    """(family, kpi, dimensions, numerator, denominator, value, unit, stats) for everything the cell holds."""
    base = _base_dimensions(cell)
    steps = list(zip(funnel, funnel[1:], strict=False))
    counts, sums = state.counts, state.sums
    if cell.family == FUNNEL:
        return _funnel_candidates(base, state, funnel, currency, economics)
    if cell.family == CONVERSION_TIME:
        found: list[Candidate] = []
        for from_stage, to_stage in steps:
            samples = state.samples.get(step_name(from_stage, to_stage), [])
            stats = conversion_stats(samples)
            dims = {"from_stage": from_stage, "to_stage": to_stage, **base}
            found.append((FAMILY_TIME_TO_CONVERSION, "time_to_conversion", dims, sum(samples) / 1000, len(samples),
                          stats["median"], "seconds", stats))
        return found
    if cell.family == COHORT:
        found = []
        for from_stage, to_stage in steps:
            step = step_name(from_stage, to_stage)
            entered, converted = counts.get(step, 0), counts.get(f"{step}+", 0)
            dims = {"from_stage": from_stage, "to_stage": to_stage, **base}
            found.append((FAMILY_COHORT, "cohort_conversion", dims, converted, entered, ratio(converted, entered),
                          "ratio", None))
        return found
    if cell.family == OWNER:
        won, lost = counts.get("won", 0), counts.get(LOST_STAGE, 0)
        return [(FAMILY_QUALITY, "win_rate", {"owner": cell.key or ""}, won, won + lost, ratio(won, won + lost),
                 "ratio", None)]
    if cell.family == SHARE:
        total = sums.get(SHARE_ALL, 0)
        found = []
        for name, micros in sorted(sums.items()):
            if name == SHARE_ALL:
                continue
            channel, _, campaign = name.partition("\x00")
            dims = {"channel": channel, "campaign": campaign} if campaign else {"channel": channel}
            found.append((FAMILY_REVENUE, "revenue_contribution", dims, _money(micros), _money(total),
                          ratio(micros, total), "ratio", None))
        return found
    if cell.family == TRAFFIC:
        views, visitors = counts.get("views", 0), counts.get("visitors", 0)
        return [(FAMILY_TRAFFIC, "page_views", base, views, None, float(views), "views", None),
                (FAMILY_TRAFFIC, "visitors", base, visitors, None, float(visitors), "visitors", None)]
    if cell.family == ASSET:
        leads, visitors = counts.get("leads", 0), counts.get("visitors", 0)
        return [(FAMILY_VISIT_TO_LEAD, "visit_to_lead", {"asset": cell.key or ""}, leads, visitors,
                 ratio(leads, visitors), "ratio", None)]
    if cell.family == ATTRIBUTION:
        dims = {"model": cell.key or "", **base}
        credited = sums.get("leads", 0) / LEAD_CREDIT
        return [(FAMILY_ATTRIBUTION, "attributed_leads", dims, credited, None, credited, "leads", None),
                (FAMILY_ATTRIBUTION, "attributed_pipeline", dims, _money(sums.get("pipeline", 0)), None,
                 _money(sums.get("pipeline", 0)), currency, None),
                (FAMILY_ATTRIBUTION, "attributed_revenue", dims, _money(sums.get("revenue", 0)), None,
                 _money(sums.get("revenue", 0)), currency, None)]
    raise ValueError(f"unknown cell family {cell.family!r}")


def changed_records(
    cell: CellId, state: CellState, funnel: tuple[str, ...], currency: str, emitted_at_ms: int,
    economics: tuple[Decimal, Decimal] | None = None, *, windows: Windows | None = None,
) -> list[KpiRecord]:
    """Records for the KPIs of ``cell`` whose content changed since last sent; bumps their revisions.

    A KPI with nothing behind it (zero numerator and denominator) is not sent
    until it has something, but once sent it is kept up to date, including
    back to zero after a correction.
    """
    records: list[KpiRecord] = []
    window: dict[str, str] | None = None  # described once a record needs it
    part = _key_part(cell.size, cell.start_ms, windows)  # the same for every KPI of the cell
    emitted, final = state.emitted, state.final
    for family, kpi, dims, numerator, denominator, value, unit, stats in _candidates(
            cell, state, funnel, currency, economics):
        key = _record_key(kpi, part, tuple(dims.items()))
        previous = emitted.get(key)
        if previous is None and not numerator and not denominator:
            continue
        signature = [numerator, denominator, value, final, stats]
        if previous is not None and previous[1] == signature:
            continue
        revision = 1 if previous is None else previous[0] + 1
        emitted[key] = [revision, signature]
        if window is None:
            window = _window(cell, windows)
        records.append(_record(family, key, kpi, window, dims, signature, unit, revision, emitted_at_ms))
    return records


def current_records(
    cell: CellId, state: CellState, funnel: tuple[str, ...], currency: str, emitted_at_ms: int,
    economics: tuple[Decimal, Decimal] | None = None, *, windows: Windows | None = None,
) -> list[KpiRecord]:
    """The last record sent for each KPI of ``cell``, again, with the same revision.

    The cell stage persists a cell before it sends the records of the change;
    a worker that stops in between leaves them unsent, so whoever restores the
    cell sends them again from the state.
    """
    records: list[KpiRecord] = []
    window = _window(cell, windows)
    for family, kpi, dims, *_, unit, _stats in _candidates(cell, state, funnel, currency, economics):
        key = record_key(kpi, cell.size, cell.start_ms, dims, windows)
        previous = state.emitted.get(key)
        if previous is not None:
            records.append(_record(family, key, kpi, window, dims, previous[1], unit, previous[0], emitted_at_ms))
    for key, (revision, signature) in state.emitted.items():
        # A target's records live in the state of the cell its KPI is in; their key says what they are.
        kpi = key.partition("|")[0]
        if kpi in TARGET_KPIS:
            dims = orjson.loads(key.split("|", 3)[3])  # kpi|size|start|dimensions: only the last holds a "|"
            records.append(_record(FAMILY_TARGETS, key, kpi, window, dims, signature, "ratio", revision,
                                   emitted_at_ms))
    return records


def target_records(target: Target, cell: CellId, state: CellState, funnel: tuple[str, ...], currency: str,
                   emitted_at_ms: int, windows: Windows, watermark: int | None) -> list[KpiRecord]:
    """The target's records for the window of ``cell`` (the cell that holds its KPI), where they changed.

    ``target_attainment``: the KPI's value ÷ the target; ``target_pacing``: that ÷ the share of the window the
    watermark has passed (in thousandths, so a record per thousandth at most), or the attainment itself for a
    ratio KPI. Their dimensions name the KPI and the bound (``at_least``, ``at_most``) beside the KPI's own.
    """
    wanted = target.record_dimensions()
    actual = next((value for _, kpi, dims, _n, _d, value, *_ in _candidates(cell, state, funnel, currency)
                   if kpi == target.kpi and dims == wanted), None)
    attained = attainment(actual, target)
    elapsed = elapsed_share(cell.start_ms, windows.end(cell.size, cell.start_ms), watermark)
    dims = target.target_dimensions()
    window = _window(cell, windows)
    records = []
    for kpi, numerator, denominator, value in (
            ("target_attainment", actual, float(target.value), attained),
            ("target_pacing", attained, elapsed if target.cumulative else 1.0, pacing(attained, elapsed, target))):
        key = record_key(kpi, cell.size, cell.start_ms, dims, windows)
        previous = state.emitted.get(key)
        signature = [numerator, denominator, value, state.final, None]
        if previous is not None and previous[1] == signature:
            continue
        revision = 1 if previous is None else previous[0] + 1
        state.emitted[key] = [revision, signature]
        records.append(_record(FAMILY_TARGETS, key, kpi, window, dims, signature, "ratio", revision, emitted_at_ms))
    return records


def _window(cell: CellId, windows: Windows | None) -> dict[str, str]:
    """A record's window; without ``windows`` a UTC window of a fixed size, as before calendars (the math's tests)."""
    if windows is not None:
        return windows.describe(cell.size, cell.start_ms)
    return {"size": format_duration(cell.size), "start": format_rfc3339(cell.start_ms),
            "end": format_rfc3339(cell.start_ms + cell.size), "zone": "UTC", "kind": "calendar"}


def _record(family: str, key: str, kpi: str, window: dict[str, str], dims: dict[str, str], signature: list[Any],
            unit: str, revision: int, emitted_at_ms: int) -> KpiRecord:
    numerator, denominator, value, final, stats = signature
    record: dict[str, Any] = {
        "kpi": kpi, "window": window, "dimensions": dims, "value": value, "numerator": numerator,
        "denominator": denominator, "unit": unit, "final": final, "revision": revision,
        "emitted_at": format_rfc3339(emitted_at_ms),
    }
    if stats is not None:
        record["stats"] = stats
    return KpiRecord(family, key, record)
