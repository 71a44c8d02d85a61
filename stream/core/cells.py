"""Additive window cells: what each lead fact or spend adds to which (window, dimensions) cell.

A cell is one tumbling window of one size for one dimension set, holding only
additive state (counts, money sums, sample lists). Ratios are taken when a KPI
is read, never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from stream.core.calendar import trailing_days
from stream.core.funnel import (
    AmountFact,
    AssetFact,
    Attribution,
    CloseFact,
    CohortFact,
    ConversionFact,
    Fact,
    StageFact,
)
from stream.core.quantiles import add_sorted, remove_sorted
from stream.core.windows import DAY, Windows

# Cell families. Each lists the roll-up levels it keeps; ``key`` is a family's own dimension.
FUNNEL = "f"  # stage entries, spend, pipeline and revenue: all traffic / channel / channel+campaign
CONVERSION_TIME = "t"  # time-to-conversion samples: all traffic / channel
COHORT = "c"  # per funnel step, leads that entered the first stage and how many converted: all / channel
OWNER = "o"  # leads won and lost, key = owner
SHARE = "r"  # won revenue per channel and per channel+campaign, all traffic (for contribution to revenue)
TRAFFIC = "v"  # page views and distinct visitors: all traffic / channel
ASSET = "a"  # distinct visitors of a page and leads created on it, key = page or asset
ATTRIBUTION = "m"  # credited leads, pipeline and revenue per touch channel (+campaign), key = model
NO_CHANNEL = "(none)"  # channel of page views that name none
KEYED = (ASSET, OWNER)  # families whose key is a dimension value (a page, an owner)
# The value a channel, campaign, page or owner is reported under once its window has as many values as the limit.
OTHER = "other"


class CellId(NamedTuple):
    """One window of one size for one dimension set; ``None`` dimensions are roll-ups.

    ``size`` is a window size code (``stream.core.calendar``): its end, bounds and label come from the
    ``Windows`` in force.
    """

    family: str
    size: int
    start_ms: int
    channel: str | None
    campaign: str | None
    key: str | None = None

    @property
    def level(self) -> str:
        """Roll-up level: all traffic, per channel, per channel and campaign, or per key (page, owner)."""
        if self.campaign is not None:
            return "campaign"
        if self.channel is not None:
            return "channel"
        return "key" if self.family in KEYED else "all"

    def group(self) -> tuple[str, str, str]:
        """The cells whose dimension values compete for the same own cells: one family at one level.

        An attribution cell's key is its model, not a dimension value, so each model is a group of its own.
        """
        return self.family, self.level, (self.key or "") if self.family == ATTRIBUTION else ""

    def routing_key(self) -> str:
        """All cells of one group and window size share a partition: its owner sees every window of every
        dimension value in it, so it alone decides which values keep their own cells and holds the ``other`` cell
        they fold into. (Each window size apart spreads the load; the metrics gauges of one size and value still
        come from one worker.)"""
        family, level, model = self.group()
        # A trailing window lives beside the daily cells it is folded from (``stream.core.trailing``).
        size = DAY if trailing_days(self.size) else self.size
        return f"{family}\x00{level}\x00{model}\x00{size}"


def place(cell: CellId, known: Callable[[CellId], bool], taken: int, limit: int) -> CellId:
    """The cell a delta for ``cell`` goes to when its group's window already has ``taken`` cells.

    A value keeps its own cell once it has one, and gets one while the window has fewer than ``limit``; after
    that it is folded into ``other``. A campaign goes to its channel's ``other`` campaign while the window has
    fewer than twice the limit (or that cell exists already), then to channel and campaign ``other``: a window
    of a group holds at most ``limit + 1`` cells (``2 * limit + 1`` at the campaign level). The decision depends
    only on the cells already there, so a replayed delta goes where it went before; once folded, a value stays
    folded for the window, so a retraction finds what it retracts.
    """
    if cell.level == "all" or known(cell) or taken < limit:
        return cell
    if cell.level == "campaign":
        own_channel = cell._replace(campaign=OTHER)
        if known(own_channel) or taken < 2 * limit:
            return own_channel
        return cell._replace(channel=OTHER, campaign=OTHER)
    if cell.level == "channel":
        return cell._replace(channel=OTHER)
    return cell._replace(key=OTHER)


def cell_ids(family: str, ts: int, channel: str | None, campaign: str | None, windows: Windows,
             key: str | None = None) -> tuple[CellId, ...]:
    """The cells an observation at ``ts`` falls in: each window size times each roll-up level."""
    return _cell_ids(family, windows.starts(ts), channel, campaign, key)


# Most observations of an hour fall in the same windows with one of a few channels and campaigns: their cells are
# made once (a CellId is immutable, so the same tuple serves every caller).
@lru_cache(maxsize=4096)
def _cell_ids(family: str, starts: tuple[tuple[int, int], ...], channel: str | None, campaign: str | None,
              key: str | None) -> tuple[CellId, ...]:
    levels: list[tuple[str | None, str | None]] = [(None, None)]
    if channel is not None and family not in (OWNER, SHARE, ASSET):
        levels.append((channel, None))
        if family in (FUNNEL, ATTRIBUTION) and campaign is not None:
            levels.append((channel, campaign))
    return tuple(CellId(family, size, start, ch, cp, key) for size, start in starts for ch, cp in levels)


@dataclass(slots=True)
class CellDelta:
    """A change to one cell: count changes per stage, spend, and samples added or removed per step."""

    counts: dict[str, int] = field(default_factory=dict)
    spend_micros: int = 0
    samples_added: dict[str, list[int]] = field(default_factory=dict)
    samples_removed: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, int] = field(default_factory=dict)  # money in micro-units, or attribution micro-credits

    def is_empty(self) -> bool:
        """True when applying it would change nothing."""
        return (not any(self.counts.values()) and not self.spend_micros and not self.samples_added
                and not self.samples_removed and not any(self.sums.values()))

    def merge(self, other: CellDelta) -> None:
        """Fold a later delta into this one, so that applying the result equals applying both in order.

        A sample added by one and removed by the other cancels out (applying a delta removes before it adds).
        """
        counts = self.counts
        for name, change in other.counts.items():
            counts[name] = counts.get(name, 0) + change
        self.spend_micros += other.spend_micros
        sums = self.sums
        for name, change in other.sums.items():
            sums[name] = sums.get(name, 0) + change
        if other.samples_removed:
            for step, values in other.samples_removed.items():
                added = self.samples_added.get(step, [])
                for value in values:
                    if value in added:
                        added.remove(value)
                    else:
                        self.samples_removed.setdefault(step, []).append(value)
            self.samples_added = {step: values for step, values in self.samples_added.items() if values}
        for step, values in other.samples_added.items():
            self.samples_added.setdefault(step, []).extend(values)

    def add(self, name: str, change: int) -> None:
        """Change one count."""
        self.counts[name] = self.counts.get(name, 0) + change

    def add_sum(self, name: str, change: int) -> None:
        """Change one sum."""
        self.sums[name] = self.sums.get(name, 0) + change

    def to_doc(self) -> dict[str, Any]:
        """Compact JSON form for the cell-delta topic."""
        doc: dict[str, Any] = {}
        counts = {stage: n for stage, n in self.counts.items() if n}
        if counts:
            doc["c"] = counts
        if self.spend_micros:
            doc["s"] = self.spend_micros
        if self.samples_added:
            doc["a"] = self.samples_added
        if self.samples_removed:
            doc["r"] = self.samples_removed
        sums = {name: n for name, n in self.sums.items() if n}
        if sums:
            doc["m"] = sums
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CellDelta:
        """Inverse of :meth:`to_doc`."""
        return cls(dict(doc.get("c", {})), doc.get("s", 0), dict(doc.get("a", {})), dict(doc.get("r", {})),
                   dict(doc.get("m", {})))


def step_name(from_stage: str, to_stage: str) -> str:
    """Key of a funnel step inside a conversion-time cell."""
    return f"{from_stage}>{to_stage}"


def deltas_for_facts(changes: list[tuple[Fact, Attribution, int]], windows: Windows) -> dict[CellId, CellDelta]:
    """Turn one lead's fact changes into one merged delta per touched cell."""
    deltas: dict[CellId, CellDelta] = {}

    def touch(family: str, ts: int, key: str | None = None) -> list[CellDelta]:
        cells = cell_ids(family, ts, attribution.channel, attribution.campaign, windows, key)
        return [deltas.setdefault(cell, CellDelta()) for cell in cells]

    for fact, attribution, sign in changes:
        if isinstance(fact, StageFact):
            for delta in touch(FUNNEL, fact.ts):
                delta.add(fact.stage, sign)
        elif isinstance(fact, ConversionFact):
            step = step_name(fact.from_stage, fact.to_stage)
            for delta in touch(CONVERSION_TIME, fact.ts):
                target = delta.samples_added if sign > 0 else delta.samples_removed
                target.setdefault(step, []).append(fact.duration_ms)
        elif isinstance(fact, AmountFact):
            name = "pipeline" if fact.stage == "opportunity" else "revenue"
            for delta in touch(FUNNEL, fact.ts):
                delta.add_sum(name, sign * fact.micros)
            if name == "revenue":
                for delta in touch(SHARE, fact.ts):
                    delta.add_sum(SHARE_ALL, sign * fact.micros)
                    delta.add_sum(share_name(attribution.channel, None), sign * fact.micros)
                    if attribution.campaign is not None:
                        delta.add_sum(share_name(attribution.channel, attribution.campaign), sign * fact.micros)
        elif isinstance(fact, CloseFact):
            for delta in touch(OWNER, fact.ts, fact.owner):
                delta.add(fact.stage, sign)
        elif isinstance(fact, AssetFact):
            for delta in touch(ASSET, fact.ts, fact.asset):
                delta.add("leads", sign)
        elif isinstance(fact, CohortFact):
            step = step_name(fact.from_stage, fact.to_stage)
            for delta in touch(COHORT, fact.ts):
                delta.add(step, sign)
                if fact.converted:
                    delta.add(f"{step}+", sign)
    return {cell: delta for cell, delta in deltas.items() if not delta.is_empty()}


SHARE_ALL = "*"


def share_name(channel: str, campaign: str | None) -> str:
    """Name of a channel's (or channel+campaign's) revenue sum in a revenue-share cell."""
    return channel if campaign is None else f"{channel}\x00{campaign}"


def deltas_for_spend(
    ts: int, channel: str, campaign: str | None, micros: int, windows: Windows
) -> dict[CellId, CellDelta]:
    """Spend adds money to the funnel cells of its channel and campaign."""
    return {cell: CellDelta(spend_micros=micros) for cell in cell_ids(FUNNEL, ts, channel, campaign, windows)}


@dataclass(slots=True)
class CellState:
    """The fold over a cell's deltas, plus bookkeeping for idempotent replays and revisions.

    ``applied`` maps each upstream partition to the position of the last delta
    taken from it, so a delta replayed after a crash is recognised and skipped.
    ``emitted`` maps each KPI record key to ``[revision, signature]`` of the last
    record sent for it.
    """

    counts: dict[str, int] = field(default_factory=dict)
    spend_micros: int = 0
    samples: dict[str, list[int]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    emitted: dict[str, list[Any]] = field(default_factory=dict)
    final: bool = False
    sums: dict[str, int] = field(default_factory=dict)
    folded: dict[str, list[Any]] = field(default_factory=dict)

    def is_replay(self, source: str, where: int, tag: str = "") -> bool:
        """Whether the delta at ``where`` from ``source`` is in already.

        Upstream sends one delta per cell per position, but deltas of several values folded into one cell (see
        ``place``) share one: ``tag`` names the value a folded delta came for ("" for the cell's own), and
        ``folded`` keeps, per source, ``[position, tags...]`` of those taken at the last position.
        """
        last = self.applied.get(source, -1)
        if where != last:
            return where < last
        entry = self.folded.get(source)
        if entry is None or entry[0] != last:
            return tag == ""  # only the cell's own delta was taken at that position
        return tag in entry[1:]

    def mark_applied(self, source: str, where: int, tag: str = "") -> None:
        """Record a delta as taken (after ``is_replay`` said it was not)."""
        last = self.applied.get(source, -1)
        self.applied[source] = where
        if where > last:
            if tag:
                self.folded[source] = [where, tag]
            elif self.folded:
                self.folded.pop(source, None)
            return
        entry = self.folded.get(source)
        if entry is None or entry[0] != where:
            self.folded[source] = [where, "", tag]  # the cell's own delta came first
        else:
            entry.append(tag)

    def apply(self, delta: CellDelta) -> None:
        """Fold one delta in."""
        for stage, change in delta.counts.items():
            self.counts[stage] = self.counts.get(stage, 0) + change
        self.spend_micros += delta.spend_micros
        for name, change in delta.sums.items():
            self.sums[name] = self.sums.get(name, 0) + change
        for step, values in delta.samples_removed.items():
            kept = self.samples.get(step, [])
            for value in values:
                remove_sorted(kept, value)
        for step, values in delta.samples_added.items():
            kept = self.samples.setdefault(step, [])
            for value in values:
                add_sorted(kept, value)

    def to_doc(self) -> dict[str, Any]:
        """JSON form for the cell table."""
        doc = {"c": self.counts, "s": self.spend_micros, "t": self.samples, "p": self.applied,
               "e": self.emitted, "f": self.final, "m": self.sums}
        if self.folded:
            doc["x"] = self.folded
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CellState:
        """Inverse of :meth:`to_doc`."""
        return cls(doc["c"], doc["s"], doc["t"], doc["p"], doc["e"], doc["f"], doc.get("m", {}), doc.get("x", {}))


def fold_tag(named: CellId, cell: CellId) -> str:
    """What tells a folded delta's value apart in ``CellState.folded``; "" for a cell's own delta."""
    if named == cell:
        return ""
    return f"{named.channel or ''}\x00{named.campaign or ''}\x00{named.key or ''}"


def fold_share_names(delta: CellDelta, sums: dict[str, int], limit: int) -> None:
    """Fold the revenue-share names of ``delta`` that ``sums`` has no room for into ``other`` names, in place.

    A revenue-share cell holds one sum per channel and per channel and campaign, so its names are dimension
    values too: a name keeps its sum once it has one, and gets one while the cell has fewer than ``limit``
    channels (campaigns: twice the limit, counted with the channels), as ``place`` decides for cells.
    """
    folded: dict[str, int] = {}
    for name, change in delta.sums.items():
        target = name
        if name != SHARE_ALL and name not in sums:
            taken = len(sums) - (SHARE_ALL in sums)
            if taken >= limit:
                channel, _, campaign = name.partition("\x00")
                if campaign:
                    own_channel = share_name(channel, OTHER)
                    target = own_channel if own_channel in sums or taken < 2 * limit else share_name(OTHER, OTHER)
                else:
                    target = OTHER
            sums.setdefault(target, 0)  # taken now, so the names after it count it
        folded[target] = folded.get(target, 0) + change
    delta.sums = folded
