"""Targets a marketing team sets per KPI, period and dimensions, and how far each is attained and on pace.

A target file (TOML, named by ``KPI_TARGETS_FILE``) lists one ``[[targets]]`` table per target::

    [[targets]]
    kpi = "pipeline"        # a KPI of the catalogue (README), for all traffic ...
    period = "1q"           # one of KPI_WINDOW_SIZES
    at_least = 100000       # in the KPI's unit: the reporting currency here

    [[targets]]
    kpi = "lead_volume"
    period = "1mo"
    channel = "paid_search" # ... or one channel (and campaign)
    at_least = 150

    [[targets]]
    kpi = "cost_per_lead"
    period = "1mo"
    channel = "paid_social"
    at_most = 40

For each target and each window of its period: attainment = actual ÷ target; pacing = attainment ÷ the share of
the window elapsed by the watermark (on pace at 1.0) for a KPI that accumulates over the period (volumes, money,
page views, visitors), and the attainment itself for a ratio (cost per lead, conversion rate), which does not
accumulate.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from stream.core.calendar import parse_window_size, size_label
from stream.core.cells import FUNNEL, TRAFFIC, CellId

# The KPIs a target can name: those of the funnel and traffic cells, per all traffic, channel or channel+campaign
# (conversion rates per step too). Each with whether it accumulates over a period.
_CUMULATIVE = {"pipeline", "revenue", "page_views", "visitors"}
_RATIOS = {"cost_per_lead", "cost_per_mql", "cost_per_acquisition", "lead_to_opportunity", "lead_to_customer",
           "close_rate", "win_rate", "average_deal_size", "average_lead_value", "average_revenue_per_customer",
           "roas", "roi", "conversion_rate"}
_STAGE_KEYS = ("from_stage", "to_stage")
_DIMENSION_KEYS = ("channel", "campaign", *_STAGE_KEYS)
_BOUNDS = ("at_least", "at_most")
# The elapsed share is rounded to this many parts: pacing moves with the watermark, and a record per part (about 43
# minutes of a month) is live enough without one per batch.
ELAPSED_PARTS = 1000


class TargetsError(ValueError):
    """The target file cannot be used; the message names the file, the target and the rule."""


@dataclass(frozen=True, slots=True)
class Target:
    """One target: a KPI over one period for one set of dimensions, at least or at most ``value``."""

    kpi: str
    period: int  # a window size code
    dimensions: tuple[tuple[str, str], ...]  # sorted (key, value) pairs; empty: all traffic
    value: Decimal
    bound: str  # "at_least" or "at_most"

    @property
    def cumulative(self) -> bool:
        """Whether the KPI accumulates over the period (then pacing projects it; a ratio is its own pace)."""
        return self.kpi in _CUMULATIVE or self.kpi.endswith("_volume")

    def cell(self, start_ms: int) -> CellId:
        """The cell that holds the KPI for the window of the target's period starting at ``start_ms``."""
        named = dict(self.dimensions)
        family = TRAFFIC if self.kpi in ("page_views", "visitors") else FUNNEL
        return CellId(family, self.period, start_ms, named.get("channel"), named.get("campaign"))

    def record_dimensions(self) -> dict[str, str]:
        """The dimensions of the KPI record the target reads: its own, with the step of a conversion rate."""
        return dict(self.dimensions)

    def target_dimensions(self) -> dict[str, str]:
        """The dimensions of the target's own records: which KPI, which bound, and the KPI's dimensions."""
        return {"target_kpi": self.kpi, "bound": self.bound, **dict(self.dimensions)}


def attainment(actual: float | None, target: Target) -> float | None:
    """actual ÷ target (None when the KPI has no value, e.g. a cost per lead with no lead)."""
    if actual is None or not target.value:
        return None
    return float(Decimal(str(actual)) / target.value)


def elapsed_share(start_ms: int, end_ms: int, watermark: int | None) -> float:
    """The share of [start, end) the watermark has passed, 0 to 1, in parts of ``ELAPSED_PARTS``."""
    if watermark is None or watermark <= start_ms:
        return 0.0
    if watermark >= end_ms:
        return 1.0
    return ((watermark - start_ms) * ELAPSED_PARTS // (end_ms - start_ms)) / ELAPSED_PARTS


def pacing(attained: float | None, elapsed: float, target: Target) -> float | None:
    """attainment ÷ elapsed share for a KPI that accumulates; the attainment itself for a ratio."""
    if attained is None:
        return None
    if not target.cumulative:
        return attained
    return attained / elapsed if elapsed > 0 else None


def load_targets(path: str, sizes: tuple[int, ...], funnel: tuple[str, ...]) -> tuple[Target, ...]:
    """The targets of a TOML target file, each checked.

    Args:
        path: the file (``KPI_TARGETS_FILE``); empty: no targets.
        sizes: the window sizes in force: a target's period must be one of them.
        funnel: the funnel stages (for the volume KPIs and a conversion rate's steps).

    Raises:
        TargetsError: naming the file, the target (its number) and what is wrong with it.
    """
    if not path:
        return ()
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TargetsError(f"KPI_TARGETS_FILE {path}: cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetsError(f"KPI_TARGETS_FILE {path}: not TOML: {exc}") from None
    unknown = sorted(set(doc) - {"targets"})
    if unknown:
        raise TargetsError(f"KPI_TARGETS_FILE {path}: unknown key {unknown[0]!r}: list each target as a "
                           "[[targets]] table")
    entries = doc.get("targets", [])
    if not isinstance(entries, list):
        raise TargetsError(f"KPI_TARGETS_FILE {path}: 'targets' must be a list of [[targets]] tables")
    known = _known_kpis(funnel)
    targets: list[Target] = []
    seen: set[tuple[str, int, tuple[tuple[str, str], ...]]] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"KPI_TARGETS_FILE {path}: target {number}"
        target = _target(entry, where, known, sizes, funnel)
        identity = (target.kpi, target.period, target.dimensions)
        if identity in seen:
            raise TargetsError(f"{where}: a second target for {target.kpi} per {size_label(target.period)} with the "
                               "same dimensions")
        seen.add(identity)
        targets.append(target)
    return tuple(targets)


def _known_kpis(funnel: tuple[str, ...]) -> set[str]:
    return _CUMULATIVE | _RATIOS | {f"{stage}_volume" for stage in (*funnel, "lost")}


def _target(entry: Any, where: str, known: set[str], sizes: tuple[int, ...], funnel: tuple[str, ...]) -> Target:
    if not isinstance(entry, dict):
        raise TargetsError(f"{where}: must be a table ([[targets]])")
    allowed = {"kpi", "period", *_DIMENSION_KEYS, *_BOUNDS}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise TargetsError(f"{where}: unknown key {extra[0]!r}; a target has {', '.join(sorted(allowed))}")
    kpi = entry.get("kpi")
    if not isinstance(kpi, str) or kpi not in known:
        close = difflib.get_close_matches(str(kpi), sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(sorted(known))}"
        raise TargetsError(f"{where}: kpi {kpi!r} cannot have a target: {hint}")
    period_text = entry.get("period")
    try:
        period = parse_window_size(str(period_text))
    except ValueError as exc:
        raise TargetsError(f"{where}: period: {exc}") from None
    if period not in sizes:
        raise TargetsError(f"{where}: period {period_text!r} is not one of KPI_WINDOW_SIZES "
                           f"({', '.join(size_label(size) for size in sizes)}): add it there")
    dimensions = _dimensions(entry, where, kpi, funnel)
    bounds = [bound for bound in _BOUNDS if bound in entry]
    if len(bounds) != 1:
        raise TargetsError(f"{where}: give the target as exactly one of at_least = N or at_most = N")
    raw = entry[bounds[0]]
    try:
        value = Decimal(str(raw)) if isinstance(raw, int | float | str) and not isinstance(raw, bool) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value <= 0:
        raise TargetsError(f"{where}: {bounds[0]} must be a number above 0, not {raw!r}")
    return Target(kpi, period, dimensions, value, bounds[0])


def _dimensions(entry: dict[str, Any], where: str, kpi: str, funnel: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    named = {key: entry[key] for key in _DIMENSION_KEYS if key in entry}
    for key, value in named.items():
        if not isinstance(value, str) or not value:
            raise TargetsError(f"{where}: {key} must be a non-empty string")
    if "campaign" in named and "channel" not in named:
        raise TargetsError(f"{where}: a campaign's target names its channel too (channel = \"...\")")
    if kpi in ("page_views", "visitors") and "campaign" in named:
        raise TargetsError(f"{where}: {kpi} is kept per channel, not per campaign")
    if kpi == "conversion_rate":
        steps = list(zip(funnel, funnel[1:], strict=False))
        step = (named.get("from_stage"), named.get("to_stage"))
        if step not in steps:
            raise TargetsError(f"{where}: a conversion_rate target names its step, one of "
                               f"{', '.join(f'{a}->{b}' for a, b in steps)} (from_stage, to_stage)")
    elif any(key in named for key in _STAGE_KEYS):
        raise TargetsError(f"{where}: only a conversion_rate target names from_stage and to_stage")
    return tuple(sorted(named.items()))
