"""Stage 3: window cells. Applies deltas exactly once, finalises windows by the watermark, emits KPI records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from stream.core import jsonbytes
from stream.core.calendar import trailing_days
from stream.core.cells import (
    COHORT,
    CONVERSION_TIME,
    SHARE,
    CellDelta,
    CellId,
    CellState,
    fold_share_names,
    fold_tag,
    place,
)
from stream.core.kpis import KpiRecord, changed_records, current_records, target_records
from stream.core.targets import Target
from stream.core.trailing import has_trailing
from stream.core.windows import DAY, Windows, nominal_ms
from stream.pipeline.counts import BatchCounts
from stream.pipeline.eventtime.cells import CellClock
from stream.pipeline.eventtime.closing import DueCells, is_closed
from stream.pipeline.keys import WATERMARK_KEY_PREFIX, cell_key, cell_of, cell_partition, chunked_key
from stream.pipeline.pacing import RecordPace
from stream.pipeline.partitions import OwnedIndexes
from stream.pipeline.routing import partition_for
from stream.pipeline.state import (
    CHUNK_BYTES,
    BatchWrites,
    ChunkCensus,
    Store,
    read_value,
    write_value,
)
from stream.pipeline.trailing import TrailingCells, stored
from stream.pipeline.wire import CellEnvelope, WireRefused


@dataclass(frozen=True, slots=True)
class CellConfig:
    """What the cell stage needs from the settings."""

    partitions: int
    windows: Windows
    allowed_lateness_ms: int
    funnel: tuple[str, ...]
    reporting_currency: str
    cohort_window_ms: int = 90 * 86_400_000
    economics: tuple[Decimal, Decimal] | None = None  # (churn rate, gross margin) for lifetime value
    value_limit: int = 500  # own cells per window of a group (see ``place``); the rest go to ``other``
    targets: tuple[Target, ...] = ()  # the team's targets (``stream.core.targets``), attained and paced here
    record_interval_ms: int = 0  # least processing time between two sends of a cell's records (``RecordPace``)

    def closes_at(self, cell: CellId) -> int:
        """Event time after which (plus the lateness) a cell can no longer change.

        A cohort keeps maturing for the conversion window after its own window ends.
        """
        return self.windows.end(cell.size, cell.start_ms) + (self.cohort_window_ms if cell.family == COHORT else 0)

    def kept_for(self, cell: CellId) -> int:
        """How long a final cell is kept after it closed: a window length, and a daily cell as long as the longest
        trailing window folded from it (plus a day: a day of a time zone may last 25 hours)."""
        kept = nominal_ms(cell.size)
        if cell.size == DAY and has_trailing(cell.family):
            kept += self.windows.day_kept_ms
        return kept


@dataclass(slots=True)
class CellOutput:
    """One batch's results: KPI records, cell-table writes, the cells that changed, and counts."""

    records: list[KpiRecord] = field(default_factory=list)
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    touched: dict[CellId, CellState] = field(default_factory=dict)
    counts: BatchCounts = field(default_factory=BatchCounts)
    watermark: int | None = None
    targets: list[tuple[Target, KpiRecord]] = field(default_factory=list)  # the target records, for the gauges


@dataclass(slots=True)
class _PartitionIndex:
    clock: CellClock
    cells: DueCells  # open and final, by when they close and drop
    trailing: TrailingCells  # the open trailing windows, folded from the daily cells
    pace: RecordPace  # when each cell's records may go out next
    taken: Counter[tuple[tuple[str, str, str], int, int]] = field(default_factory=Counter)  # cells per group window
    # Until the partition's first batch after it was indexed: its cells' states to send again, its orphaned
    # chunk keys (see ``CellStage._restore``).
    restored: tuple[list[tuple[CellId, CellState]], list[bytes]] | None = None

    def known(self, cell: CellId) -> bool:
        """Whether the cell exists (open, or final and not yet dropped)."""
        return self.cells.known(cell)

    def add(self, cell: CellId) -> None:
        """Count a new open cell in its group's window."""
        if not self.cells.known(cell):
            self.taken[_window_of(cell)] += 1
            self.cells.add_open(cell)
            self.trailing.add_day(cell)

    def drop(self, cell: CellId) -> None:
        """Forget a final cell."""
        self.cells.discard_final(cell)
        self.pace.forget(cell)
        self.trailing.drop_day(cell)
        window = _window_of(cell)
        self.taken[window] -= 1
        if self.taken[window] <= 0:
            del self.taken[window]


def _window_of(cell: CellId) -> tuple[tuple[str, str, str], int, int]:
    return cell.group(), cell.size, cell.start_ms


class CellStage:
    """Owns the cell table of the cell partitions assigned to this worker.

    A batch's cell states are persisted before its KPI records are sent. The records are a function of the
    persisted state, so a record on a KPI topic always comes from a state the changelog holds: a replay after a
    crash cannot leave behind a record of a state it never reaches (it may batch the same deltas differently
    and skip that intermediate state). Records of the last change before a stop are sent again from the state
    when the partition is restored, and then those of changes held back (``stream.pipeline.pacing``).
    """

    def __init__(self, config: CellConfig, cells: Store, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.config = config
        self._cells = cells
        self._chunk_bytes = chunk_bytes  # a cell's stored state larger than this is written in parts
        self._owned: OwnedIndexes[_PartitionIndex] = OwnedIndexes()

    def assign(self, partitions: Iterable[int]) -> None:
        """Note the partitions this worker now owns: the first batch after it indexes them all in one scan."""
        self._owned.assign(partitions)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the indexes of partitions no longer owned."""
        self._owned.forget(partitions)

    def _restore(self, partition: int) -> _PartitionIndex:
        """Index ``partition`` and every other owned partition not indexed yet from one scan of the table, with
        the state of each of their cells and the orphaned chunk keys they own (see ``ChunkCensus``), kept in its
        index until the partition's first batch sends and deletes them."""
        cfg = self.config
        calendar = cfg.windows.calendar.identity
        wanted = {p: _PartitionIndex(CellClock.restore(self._cells, p, cfg.partitions, calendar),
                                     DueCells(cfg.closes_at, cfg.allowed_lateness_ms, cfg.kept_for),
                                     TrailingCells(cfg.windows, cfg.allowed_lateness_ms),
                                     RecordPace(cfg.record_interval_ms))
                  for p in self._owned.unindexed(partition)}
        for made in wanted.values():
            made.trailing.resume(made.clock.watermark())
        restored: dict[int, list[tuple[CellId, CellState]]] = {p: [] for p in wanted}
        census = ChunkCensus()
        for key, value in self._cells.items():
            if census.see(key, value) or key.startswith(WATERMARK_KEY_PREFIX):
                continue
            cell = cell_of(key)
            owner = partition_for(cell.routing_key(), cfg.partitions)
            index = wanted.get(owner)
            if index is not None:
                state = CellState.from_doc(orjson.loads(read_value(self._cells, key) or b""))
                if trailing_days(cell.size):
                    index.trailing.restore(cell, state)  # folded again from the days at the first watermark
                    continue
                (index.cells.add_final if state.final else index.cells.add_open)(cell)
                index.trailing.add_day(cell)
                index.taken[_window_of(cell)] += 1
                restored[owner].append((cell, state))
        orphans: dict[int, list[bytes]] = {p: [] for p in wanted}
        for key in census.orphans():
            owner_orphans = orphans.get(cell_partition(chunked_key(key), cfg.partitions))
            if owner_orphans is not None:
                owner_orphans.append(key)
        for p, index in wanted.items():
            index.restored = (restored[p], orphans[p])
        self._owned.add(wanted)
        return wanted[partition]

    def process(self, partition: int, envelopes: list[tuple[int, bytes]], now_ms: int) -> CellOutput:
        """Apply the delta envelopes read from one cell partition, in offset order, and emit what changed."""
        cfg = self.config
        table, progress = BatchWrites(self._cells), BatchWrites(self._cells)
        out = CellOutput()
        index = self._owned.get(partition)
        if index is None:
            index = self._restore(partition)
        states: dict[CellId, CellState] = {}
        fresh: list[CellId] = []  # cells a restart found: their records are compared with their state again
        waiting, index.restored = index.restored, None
        if waiting is not None:
            restored, orphans = waiting
            # Records of the last change before a stop may not have gone out (see CellStage): send them again.
            for cell, state in restored:
                out.records.extend(current_records(cell, state, cfg.funnel, cfg.reporting_currency, now_ms,
                                                   cfg.economics, windows=cfg.windows))
                if not state.final:  # a final cell's records went out with the change that made it final
                    states[cell] = state
                    fresh.append(cell)
            for key in orphans:
                table.set(key, None)
        changed: set[CellId] = set()
        held = index.clock.watermark()  # what the table holds: the last batch's, or the one restored
        for offset, raw_envelope in envelopes:
            try:
                envelope = CellEnvelope.decode(raw_envelope)
            except WireRefused as refused:  # stops the worker (see stream.pipeline.wire): say which message
                raise refused.at(f"cell partition {partition}, offset {offset}") from refused
            changed.update(self._apply_deltas(index, envelope, table, states, out.counts))
            index.clock.hear(progress, partition, envelope.source, envelope.watermark, now_ms)
        watermark = index.clock.watermark()
        out.watermark = watermark
        # The trailing windows first: a watermark that leaps days makes every window in between from daily cells
        # that the same leap drops.
        changed.update(self._advance_trailing(index, watermark, table, states, out, fresh, now_ms))
        if watermark is not None:
            changed.update(self._close_windows(index, watermark, held, table, states))
        sent = self._send_records(index, changed, fresh, table, states, out, now_ms)
        changed.update(self._target_records(index, partition, watermark, changed, states, table, out, now_ms))
        changed.update(sent)
        # A trailing window after the cells: a restart that finds it finds the days it was folded from as the
        # batch left them. The watermark last: a restart that finds it finds the cells it closed, not the cells
        # before the batch.
        windows = []
        for cell in changed:
            if trailing_days(cell.size):
                windows.append(cell)
            else:
                self._write(table, cell, states[cell], states[cell].to_doc(), out)
        for cell in windows:
            self._write(table, cell, states[cell], stored(states[cell]).to_doc(), out)
        out.writes = {**table.take(), **progress.take()}
        return out

    def _send_records(self, index: _PartitionIndex, changed: set[CellId], fresh: list[CellId], table: BatchWrites,
                      states: dict[CellId, CellState], out: CellOutput, now_ms: int) -> list[CellId]:
        """The records of the cells whose KPIs changed and may go out now (``RecordPace``): changed cells not held,
        final ones, held ones whose hold is over, and those a restart found; returns the cells that sent records
        (their revisions changed: they are written with the batch)."""
        cfg = self.config
        pace = index.pace
        due = dict.fromkeys(fresh)
        for cell in pace.due(now_ms):
            if cell not in states:
                state = index.trailing.cells.get(cell) if trailing_days(cell.size) else self._load(states, table, cell)
                if state is None:
                    continue  # a trailing window gone
                states[cell] = state
            due[cell] = None
        for cell in changed:
            if states[cell].final or not pace.holds(cell, now_ms):
                due[cell] = None
        sent: list[CellId] = []
        for cell in due:
            state = states.get(cell)
            if state is None:
                continue  # dropped by this batch
            records = changed_records(cell, state, cfg.funnel, cfg.reporting_currency, now_ms, cfg.economics,
                                      windows=cfg.windows)
            if records:
                out.records.extend(records)
                pace.sent(cell, now_ms)
                sent.append(cell)
        return sent

    def _write(self, table: BatchWrites, cell: CellId, state: CellState, doc: dict[str, Any], out: CellOutput) -> None:
        """Write a changed cell's stored form (``doc``) with the batch, and note its state as touched."""
        write_value(table, cell_key(cell), jsonbytes.dumps(doc), self._chunk_bytes)
        out.touched[cell] = state

    def _apply_deltas(self, index: _PartitionIndex, envelope: CellEnvelope, table: BatchWrites,
                      states: dict[CellId, CellState], counts: BatchCounts) -> list[CellId]:
        """Apply an envelope's deltas to their cells, once each, none to a closed window; return the cells changed."""
        cfg = self.config
        smallest = cfg.windows.sizes[0]
        applied: list[CellId] = []
        source = str(envelope.source)
        watermark = index.clock.watermark()
        for named, where, delta_doc in envelope.deltas:
            if named in index.cells.open:
                cell, tag = named, ""  # most deltas: an open cell of a value that has one
            else:
                cell = place(named, index.known, index.taken[_window_of(named)], cfg.value_limit)
                tag = fold_tag(named, cell)
                if tag:
                    counts.folded_deltas += 1
            state = self._load(states, table, cell)
            if state.is_replay(source, where, tag):
                # Read again after a restart: a replay, whether or not its window has closed since.
                counts.replayed_deltas += 1
                continue
            if state.final or is_closed(cfg.closes_at(cell), watermark, cfg.allowed_lateness_ms):
                # A lead's contribution landing in a closed window (its other events came later than the
                # lateness), or a replay reaching a cell already dropped: counted, not applied, so a final
                # record never changes.
                counts.late_contributions[cell.family] += 1
                continue
            delta = CellDelta.from_doc(delta_doc)
            if cell.family == SHARE:
                fold_share_names(delta, state.sums, cfg.value_limit)
            state.apply(delta)
            state.mark_applied(source, where, tag)
            applied.append(cell)
            index.add(cell)
            if cell.size == DAY:
                for window in index.trailing.took(cell, delta, lambda day: self._load(states, table, day)):
                    states[window] = index.trailing.cells[window]
                    applied.append(window)
            if cell.family == CONVERSION_TIME and cell.size == smallest and cell.channel is not None:
                for step, values in delta.samples_added.items():
                    from_stage, to_stage = step.split(">")
                    counts.conversion_samples.extend(
                        (from_stage, to_stage, cell.channel, value) for value in values)
        return applied

    def _close_windows(self, index: _PartitionIndex, watermark: int, held: int | None, table: BatchWrites,
                       states: dict[CellId, CellState]) -> list[CellId]:
        """Close the windows the watermark has passed (``eventtime.closing``): their open cells become final
        (returned, as changed), and final cells past their keeping by the watermark the table ``held`` before the
        batch are dropped."""
        closed, dropped = index.cells.close(watermark, held)
        for cell in dropped:
            index.drop(cell)
            states.pop(cell, None)
            write_value(table, cell_key(cell), None)
        for cell in closed:
            self._load(states, table, cell).final = True
        return closed

    def _advance_trailing(self, index: _PartitionIndex, watermark: int | None, table: BatchWrites,
                          states: dict[CellId, CellState], out: CellOutput, fresh: list[CellId],
                          now_ms: int) -> list[CellId]:
        """Move the trailing windows to the watermark (``stream.pipeline.trailing``); returns the windows that
        changed. The windows a restart found are sent again, as restored cells are, and noted in ``fresh``."""
        cfg = self.config
        trailing = index.trailing
        changed, dropped, kept = trailing.advance(watermark, lambda day: self._load(states, table, day))
        for window in dropped:
            states.pop(window, None)
            index.pace.forget(window)
            write_value(table, cell_key(window), None)
        for window in changed:
            states[window] = trailing.cells[window]
        for window, state in kept:
            if window not in states:
                out.records.extend(current_records(window, state, cfg.funnel, cfg.reporting_currency, now_ms,
                                                   cfg.economics, windows=cfg.windows))
                if window in trailing.cells:  # not one ahead of the watermark (``TrailingCells``)
                    states[window] = trailing.cells[window]
                    fresh.append(window)
        return changed

    def _target_records(self, index: _PartitionIndex, partition: int, watermark: int | None, changed: set[CellId],
                        states: dict[CellId, CellState], table: BatchWrites, out: CellOutput,
                        now_ms: int) -> set[CellId]:
        """The records of the targets whose KPI is in a cell of this partition that changed, or that is open in the
        window the watermark is in (its pacing moves with the watermark); returns the cells whose state they
        changed (their records' revisions live there).

        A target whose KPI has no cell in the window the watermark is in (nothing happened there yet: no paid search
        lead this month) gets an empty one from the partition that owns it, so that "0 of 150" is reported from
        the period's start instead of nothing until its first event.
        """
        cfg = self.config
        touched: set[CellId] = set()
        for target in cfg.targets:
            cells = {cell for cell in changed if cell.key is None and target.cell(cell.start_ms) == cell}
            if watermark is not None:
                current = target.cell(cfg.windows.calendar.start(watermark, target.period))
                if partition_for(current.routing_key(), cfg.partitions) == partition:
                    if current in index.cells.open:
                        cells.add(current)
                    elif not index.known(current) and not is_closed(cfg.closes_at(current), watermark,
                                                                    cfg.allowed_lateness_ms):
                        index.add(current)
                        cells.add(current)
            for cell in cells:
                records = target_records(target, cell, self._load(states, table, cell), cfg.funnel,
                                         cfg.reporting_currency, now_ms, cfg.windows, watermark)
                if records:
                    out.records.extend(records)
                    out.targets.extend((target, record) for record in records)
                    touched.add(cell)
        return touched

    def _load(self, states: dict[CellId, CellState], table: BatchWrites, cell: CellId) -> CellState:
        state = states.get(cell)
        if state is None:
            stored = read_value(table, cell_key(cell))
            state = CellState.from_doc(orjson.loads(stored)) if stored is not None else CellState()
            states[cell] = state
        return state
