"""Per-lead funnel state: stage entry times with the contract's semantics, and what a lead contributes.

A lead *enters* a stage at most once, at the earliest event time at which it is
known to have reached that stage or a later one. Stage changes that arrive
before their lead are kept as pending and applied when the lead arrives. All of
it depends on event times only, so the result is the same in any arrival order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LEAD_STAGE = "lead"
LOST_STAGE = "lost"
# The funnel stages the contract knows, in order: also the default of ``KPI_FUNNEL``, which may leave some out.
DEFAULT_FUNNEL = ("lead", "mql", "sal", "sql", "opportunity", "won")


@dataclass(frozen=True, slots=True)
class StageFact:
    """The lead entered ``stage`` at ``ts`` (epoch ms)."""

    stage: str
    ts: int


@dataclass(frozen=True, slots=True)
class ConversionFact:
    """The lead entered ``to_stage`` at ``ts``, ``duration_ms`` after entering ``from_stage``."""

    from_stage: str
    to_stage: str
    ts: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class AmountFact:
    """The deal value (micro-units) named when the lead entered ``stage`` (opportunity or won) at ``ts``."""

    stage: str
    ts: int
    micros: int


@dataclass(frozen=True, slots=True)
class CloseFact:
    """The lead was closed (``won`` or ``lost``) at ``ts`` by ``owner``."""

    stage: str
    ts: int
    owner: str


@dataclass(frozen=True, slots=True)
class AssetFact:
    """The lead was created at ``ts`` on page or asset ``asset``."""

    asset: str
    ts: int


@dataclass(frozen=True, slots=True)
class CohortFact:
    """The lead entered ``from_stage`` at ``ts``; ``converted`` if it entered ``to_stage`` within the window."""

    from_stage: str
    to_stage: str
    ts: int
    converted: bool


Fact = StageFact | ConversionFact | AmountFact | CloseFact | AssetFact | CohortFact
CLOSED_STAGES = ("won", LOST_STAGE)
VALUED_STAGES = ("opportunity", "won")


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a lead's contributions are counted under."""

    channel: str
    campaign: str | None


@dataclass(slots=True)
class PendingChange:
    """A stage change kept until its lead arrives; keeps what the dead-letter record needs."""

    event_id: str
    ts: int
    stage: str
    amount: int | None
    source: tuple[str, int, int]
    raw: str
    owner: str | None = None


@dataclass(slots=True)
class LeadState:
    """Everything known about one lead; plain data, serialisable with :func:`to_doc`."""

    channel: str | None = None
    campaign: str | None = None
    created_ts: int | None = None
    owner: str | None = None
    asset: str | None = None
    visitor: str | None = None
    # Earliest observed time per stage named by a stage change (not implied ones).
    observed: dict[str, int] = field(default_factory=dict)
    # Deal value (micro-units) and owner of the observation that set the stage's time.
    amounts: dict[str, int] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    pending: list[PendingChange] = field(default_factory=list)

    @property
    def arrived(self) -> bool:
        """Whether the lead's creation event has been seen."""
        return self.created_ts is not None

    def attribution(self) -> Attribution | None:
        """The lead's channel and campaign, once it has arrived."""
        if self.channel is None:
            return None
        return Attribution(self.channel, self.campaign)


def apply_lead(state: LeadState, ts: int, attrs: dict[str, Any]) -> None:
    """Apply a lead-created event: the earliest creation wins, with its attribution."""
    if state.created_ts is None or ts < state.created_ts:
        state.created_ts = ts
        state.channel = attrs["channel"]
        state.campaign = attrs.get("campaign")
        state.owner = attrs.get("owner")
        state.asset = attrs.get("asset")
        state.visitor = attrs.get("visitor")
    if state.pending:
        for change in state.pending:
            _observe(state, change.stage, change.ts, change.amount, change.owner)
        state.pending = []


def apply_stage_change(state: LeadState, change: PendingChange) -> bool:
    """Apply a stage change; before the lead has arrived it is kept as pending.

    Returns:
        True when it was applied now, False when it is pending.
    """
    if state.arrived:
        _observe(state, change.stage, change.ts, change.amount, change.owner)
        return True
    if all(kept.event_id != change.event_id for kept in state.pending):
        state.pending.append(change)
    return False


def _observe(state: LeadState, stage: str, ts: int, amount: int | None, owner: str | None = None) -> None:
    known = state.observed.get(stage)
    if known is None or ts < known:
        state.observed[stage] = ts
        if amount is not None:
            state.amounts[stage] = amount
        else:
            state.amounts.pop(stage, None)
        if owner is not None:
            state.owners[stage] = owner
        else:
            state.owners.pop(stage, None)


def expire_pending(state: LeadState, older_than: int) -> list[PendingChange]:
    """Remove and return pending changes whose time is before ``older_than`` (their lead never came)."""
    expired = [change for change in state.pending if change.ts < older_than]
    if expired:
        state.pending = [change for change in state.pending if change.ts >= older_than]
    return expired


def entry_times(state: LeadState, funnel: tuple[str, ...]) -> dict[str, int]:
    """When the lead entered each stage, with implied earlier stages; empty before the lead arrives."""
    if state.created_ts is None:
        return {}
    seen = dict(state.observed)
    seen[LEAD_STAGE] = min(state.created_ts, seen.get(LEAD_STAGE, state.created_ts))
    entries: dict[str, int] = {}
    earliest_later: int | None = None
    # Walk the funnel backwards: a stage is entered no later than any stage after it.
    for stage in reversed(funnel):
        ts = seen.get(stage)
        if ts is not None and (earliest_later is None or ts < earliest_later):
            earliest_later = ts
        if earliest_later is not None:
            entries[stage] = earliest_later
    if LOST_STAGE in seen and LOST_STAGE not in funnel:
        entries[LOST_STAGE] = seen[LOST_STAGE]
    return entries


def facts(state: LeadState, funnel: tuple[str, ...], cohort_window_ms: int | None = None) -> Counter[Fact]:
    """Everything this lead contributes to the KPIs, as a multiset of facts.

    Args:
        state: the lead.
        funnel: the stages in order.
        cohort_window_ms: how long after entering a stage a conversion counts for the cohort
            (None: no cohort facts).
    """
    entries = entry_times(state, funnel)
    found: Counter[Fact] = Counter(StageFact(stage, ts) for stage, ts in entries.items())
    for from_stage, to_stage in zip(funnel, funnel[1:], strict=False):
        start, end = entries.get(from_stage), entries.get(to_stage)
        if start is not None and end is not None:
            found[ConversionFact(from_stage, to_stage, end, end - start)] += 1
        if cohort_window_ms is not None and start is not None:
            converted = end is not None and end - start <= cohort_window_ms
            found[CohortFact(from_stage, to_stage, start, converted)] += 1
    if not entries:
        return found
    for stage in VALUED_STAGES:
        # The amount counts only when the observation that named it is the one that set the entry time.
        if stage in entries and stage in state.amounts and state.observed.get(stage) == entries[stage]:
            found[AmountFact(stage, entries[stage], state.amounts[stage])] += 1
    for stage in CLOSED_STAGES:
        if stage in entries:
            owner = state.owners.get(stage) if state.observed.get(stage) == entries[stage] else None
            found[CloseFact(stage, entries[stage], owner or state.owner or "(none)")] += 1
    if state.asset is not None and state.created_ts is not None:
        found[AssetFact(state.asset, state.created_ts)] += 1
    return found


def lead_value(state: LeadState, funnel: tuple[str, ...]) -> dict[str, Any] | None:
    """What the visitor's partition needs to credit this lead's touches: creation, pipeline and revenue."""
    if state.visitor is None or state.created_ts is None:
        return None
    entries = entry_times(state, funnel)
    value: dict[str, Any] = {"ts": state.created_ts}
    for stage, name in (("opportunity", "pipeline"), ("won", "revenue")):
        if stage in entries and stage in state.amounts and state.observed.get(stage) == entries[stage]:
            value[name] = [state.amounts[stage], entries[stage]]
    return value


def fact_changes(
    before: Counter[Fact], before_attr: Attribution | None, after: Counter[Fact], after_attr: Attribution | None
) -> list[tuple[Fact, Attribution, int]]:
    """What changed between two versions of a lead: (fact, attribution, +1 or -1) items.

    A corrected entry time shows up as a removal at the old time and an addition
    at the new one, which moves the entry between windows.
    """
    if before_attr == after_attr:
        if after_attr is None:
            return []
        changes = [(fact, after_attr, 1) for fact in (after - before).elements()]
        changes.extend((fact, after_attr, -1) for fact in (before - after).elements())
        return changes
    removed = [(fact, before_attr, -1) for fact in before.elements()] if before_attr else []
    added = [(fact, after_attr, 1) for fact in after.elements()] if after_attr else []
    return removed + added


def to_doc(state: LeadState) -> dict[str, Any]:
    """Serialise for the lead table (short keys keep changelog records small)."""
    doc: dict[str, Any] = {"ch": state.channel, "cp": state.campaign, "ct": state.created_ts,
                           "ob": state.observed}
    if state.owner is not None:
        doc["ow"] = state.owner
    if state.asset is not None:
        doc["as"] = state.asset
    if state.visitor is not None:
        doc["vi"] = state.visitor
    if state.amounts:
        doc["am"] = state.amounts
    if state.owners:
        doc["os"] = state.owners
    if state.pending:
        doc["pe"] = [[p.event_id, p.ts, p.stage, p.amount, list(p.source), p.raw, p.owner] for p in state.pending]
    return doc


def from_doc(doc: dict[str, Any]) -> LeadState:
    """Inverse of :func:`to_doc`."""
    return LeadState(
        channel=doc.get("ch"), campaign=doc.get("cp"), created_ts=doc.get("ct"), owner=doc.get("ow"),
        asset=doc.get("as"), visitor=doc.get("vi"), observed=dict(doc.get("ob", {})),
        amounts=dict(doc.get("am", {})), owners=dict(doc.get("os", {})),
        pending=[PendingChange(p[0], p[1], p[2], p[3], (p[4][0], p[4][1], p[4][2]), p[5], p[6] if len(p) > 6 else None)
                 for p in doc.get("pe", [])],
    )
