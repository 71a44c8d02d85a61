"""The whole dataflow in memory (no broker): results equal an independent batch computation."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

from stream.core.events import Kind
from stream.pipeline.cells import CellStage
from stream.pipeline.eventtime.sources import HOLD
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from stream.stages import build_stages, cell_config
from tests.eventset import DAY_START, MINUTE, heartbeats, mixed
from tests.reference import compute, from_records, mismatches

RATES = {"EUR": Decimal("1.08")}
KINDS = {kind.value: kind for kind in Kind}
INPUT_PARTITIONS = 2


def _settings(**overrides: str) -> Settings:
    env = {"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "3", **overrides}
    return Settings.from_env(env)


def _run(messages: list[tuple[str, bytes]], settings: Settings, batch: int = 5, seed: int = 0) -> LocalFlow:
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=INPUT_PARTITIONS)
    rand = random.Random(seed)
    for start in range(0, len(messages), batch):
        chunk = [(KINDS[topic], raw, rand.randrange(INPUT_PARTITIONS)) for topic, raw in messages[start:start + batch]]
        flow.send_batch(chunk)
        clock[0] += 10
    return flow


def _finish(flow: LocalFlow, ts: int) -> list[tuple[str, bytes]]:
    beats = heartbeats(list(flow.settings.input_topics.values()), INPUT_PARTITIONS, ts)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    flow.tick()
    flow.settle()
    return [(topic, raw) for topic, _, raw in beats]


def test_mixed_event_set_equals_batch_computation() -> None:
    messages, expected = mixed()
    flow = _run(messages, _settings())
    beats = _finish(flow, DAY_START + 3 * 86_400_000)
    want = compute(messages + beats, RATES)
    got = from_records(list(flow.records.values()))
    assert not mismatches(got, want)
    # Every window of the data set is final once the heartbeats passed it.
    assert all(r["final"] for r in flow.records.values()
               if r["window"]["start"] < "2025-11-24" and r["kpi"] != "cohort_conversion")
    counts = flow.counts
    assert sum(counts.duplicate.values()) == expected["duplicate"]
    assert sum(counts.rejected.values()) == expected["rejected"]
    assert sum(counts.valid.values()) == expected["valid"] + len(beats)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrival_order_does_not_change_results(seed: int) -> None:
    messages, _ = mixed()
    # Another arrival order of the same events: disorder within the lateness, other duplicates' positions.
    shuffled, _ = mixed(order_seed=seed)
    assert sorted(set(shuffled)) == sorted(set(messages)) and shuffled != messages
    first = _run(messages, _settings())
    second = _run(shuffled, _settings(), batch=3, seed=seed)
    _finish(first, DAY_START + 3 * 86_400_000)
    _finish(second, DAY_START + 3 * 86_400_000)
    assert from_records(list(second.records.values())) == from_records(list(first.records.values()))


def test_every_message_in_exactly_one_counter() -> None:
    messages, expected = mixed()
    flow = _run(messages, _settings())
    beats = _finish(flow, DAY_START + 3 * 86_400_000)
    counts = flow.counts
    total = sum(counts.valid.values()) + sum(counts.duplicate.values()) + sum(counts.rejected.values())
    assert total == len(messages) + len(beats)
    assert len(flow.dead_letters) == expected["rejected"]
    reasons = sorted(record["reason"] for record in flow.dead_letters)
    assert reasons.count("invalid_json") == 2 and reasons.count("too_large") == 1


def test_revisions_grow_by_one_and_keys_are_stable() -> None:
    messages, _ = mixed()
    flow = _run(messages, _settings())
    _finish(flow, DAY_START + 3 * 86_400_000)
    by_key: dict[str, list[int]] = {}
    for key, record in flow.record_log:
        by_key.setdefault(key, []).append(record["revision"])
    assert by_key
    for revisions in by_key.values():
        assert revisions == list(range(1, len(revisions) + 1))
    # The final record is the last one of its key.
    for key, record in flow.records.items():
        if record["final"]:
            assert flow.record_log[max(i for i, (k, _) in enumerate(flow.record_log) if k == key)][1]["final"]


def _lead(event_id: str, ts: int, lead_id: str = "L1", channel: str = "email") -> bytes:
    return f'{{"event_id":"{event_id}","ts":{ts},"lead_id":"{lead_id}","channel":"{channel}"}}'.encode()


def _stage(event_id: str, ts: int, stage: str, lead_id: str = "L1") -> bytes:
    return f'{{"event_id":"{event_id}","ts":{ts},"lead_id":"{lead_id}","stage":"{stage}"}}'.encode()


def test_late_event_is_dead_lettered_and_not_counted() -> None:
    settings = _settings(KPI_PARTITIONS="1")
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", DAY_START))
    _finish(flow, DAY_START + 2 * 3_600_000)  # watermark two hours on: the 08:00 hour window is closed
    flow.send(Kind.LEAD, _lead("b", DAY_START + 5 * 60_000, lead_id="L2"))
    late = [r for r in flow.dead_letters if r["reason"] == "late"]
    assert len(late) == 1 and late[0]["topic"] == "leads"
    volume = flow.latest("lead_volume", "1h", "2025-11-22T08:00:00Z")
    assert volume is not None and volume["numerator"] == 1 and volume["final"]


def test_event_within_lateness_after_window_end_still_counts() -> None:
    settings = _settings(KPI_PARTITIONS="1")
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", DAY_START))
    _finish(flow, DAY_START + 3_600_000 + 5 * 60_000)  # 09:05: the 08:00 window is open until 09:10
    flow.send(Kind.LEAD, _lead("b", DAY_START + 59 * 60_000, lead_id="L2"))
    flow.settle()
    volume = flow.latest("lead_volume", "1h", "2025-11-22T08:00:00Z")
    assert volume is not None and volume["numerator"] == 2 and not volume["final"]


def test_stage_change_without_lead_is_dead_lettered_as_unknown_lead() -> None:
    settings = _settings(KPI_PARTITIONS="1", KPI_UNKNOWN_LEAD_TIMEOUT="1h")
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.STAGE_CHANGE, _stage("s1", DAY_START, "mql", lead_id="ghost"))
    _finish(flow, DAY_START + 30 * 60_000)
    assert not [r for r in flow.dead_letters if r["reason"] == "unknown_lead"]
    _finish(flow, DAY_START + 2 * 3_600_000)
    unknown = [r for r in flow.dead_letters if r["reason"] == "unknown_lead"]
    assert len(unknown) == 1 and '"ghost"' in unknown[0]["payload"]
    assert flow.counts.rejected[("stage-changes", "unknown_lead")] == 1
    assert flow.counts.valid["stage-changes"] == 4  # the heartbeats only: the ghost change never counted valid


def test_correction_moves_entry_between_windows() -> None:
    settings = _settings(KPI_PARTITIONS="1", KPI_RECORD_INTERVAL="0")  # every change's records at once
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", DAY_START))
    flow.send(Kind.STAGE_CHANGE, _stage("m1", DAY_START + 70 * 60_000, "mql"))  # 09:10
    assert flow.latest("mql_volume", "1h", "2025-11-22T09:00:00Z")["numerator"] == 1
    flow.send(Kind.STAGE_CHANGE, _stage("m0", DAY_START + 20 * 60_000, "mql"))  # 08:20, earlier: wins
    assert flow.latest("mql_volume", "1h", "2025-11-22T09:00:00Z")["numerator"] == 0
    assert flow.latest("mql_volume", "1h", "2025-11-22T08:00:00Z")["numerator"] == 1
    ttc = flow.latest("time_to_conversion", "1h", "2025-11-22T08:00:00Z", from_stage="lead", to_stage="mql")
    assert ttc is not None and ttc["stats"]["median"] == 20 * 60


def test_replayed_cell_deltas_are_skipped() -> None:
    settings = _settings(KPI_PARTITIONS="1")
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", DAY_START))
    envelope_offset = flow._offsets[("entities", 0)] - 1
    # Replay the entity stage's last envelope as if its state had been lost before being persisted.
    flow.entity_table.clear()
    flow.entities.forget([0])
    from stream.pipeline.ingest import encode_envelope
    from stream.pipeline.wire import RoutedEvent
    item = RoutedEvent("leads", "a", DAY_START, "L1", {"channel": "email", "campaign": None, "visitor": None,
                                                       "asset": None, "owner": None},
                       "leads", 0, 0, _lead("a", DAY_START).decode())
    out = flow.entities.process(0, [(envelope_offset, encode_envelope([item], {}))], clock[0])
    for partition, envelopes in out.envelopes.items():
        for envelope in envelopes:
            flow._run_cells(partition, envelope)
    assert flow.counts.replayed_deltas > 0
    assert flow.latest("lead_volume", "1h", "2025-11-22T08:00:00Z")["numerator"] == 1


def test_window_of_a_stage_change_waiting_for_its_lead_stays_open_until_the_lead_comes() -> None:
    settings = _settings(KPI_PARTITIONS="1")
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    flow.send(Kind.STAGE_CHANGE, _stage("s1", DAY_START - 7 * MINUTE, "mql", lead_id="L9"))  # 07:53
    # Event time moves past 08:10 on every input, where the 07:00 hour (plus 10 minutes of lateness) would close.
    later = DAY_START + 25 * MINUTE
    flow.send_batch([
        (Kind.PAGE_VIEW, f'{{"event_id":"p1","ts":{later},"visitor_id":"v","url":"/"}}'.encode(), 0),
        (Kind.SPEND, f'{{"event_id":"c1","ts":{later},"channel":"email","amount":"1","currency":"USD"}}'.encode(), 0),
        (Kind.LEAD, _lead("l1", later, lead_id="L1"), 0),
        (Kind.STAGE_CHANGE, _stage("s2", later, "mql", lead_id="L1"), 0),
    ])
    flow.tick()
    flow.send(Kind.LEAD, _lead("l9", DAY_START + 23 * MINUTE, lead_id="L9"))  # created 08:23, after its mql
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in
                     heartbeats(list(settings.input_topics.values()), 1, DAY_START + 3 * 86_400_000)])
    flow.tick()
    # Entering mql at 07:53 means the lead existed by then: it counts in the 07:00 hour, which is now final.
    record = flow.latest("lead_volume", "1h", "2025-11-22T07:00:00Z")
    assert record is not None and record["numerator"] == 1 and record["final"]
    assert not flow.counts.late_contributions


def test_credit_of_a_stage_change_that_waited_for_its_lead_reaches_its_window_before_it_closes() -> None:
    # One partition: the lead's value goes to its visitor's partition, the same one, through the entity topic,
    # so it is processed a batch after the change is applied and the hold on the change's window released.
    settings = _settings(KPI_PARTITIONS="1")
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    flow.send(Kind.PAGE_VIEW, f'{{"event_id":"p0","ts":{DAY_START - 30 * MINUTE},"visitor_id":"v","url":"/"}}'.encode())
    opportunity = (f'{{"event_id":"s1","ts":{DAY_START - 7 * MINUTE},"lead_id":"L9","stage":"opportunity",'
                   '"amount":"100","currency":"USD"}').encode()
    flow.send(Kind.STAGE_CHANGE, opportunity)  # 07:53, before its lead
    later = DAY_START + 25 * MINUTE  # past 08:10, where the 07:00 hour would close
    flow.send_batch([
        (Kind.SPEND, f'{{"event_id":"c1","ts":{later},"channel":"email","amount":"1","currency":"USD"}}'.encode(), 0),
        (Kind.LEAD, _lead("l1", later, lead_id="L1"), 0),
        (Kind.STAGE_CHANGE, _stage("s2", later, "mql", lead_id="L1"), 0),
        (Kind.PAGE_VIEW, f'{{"event_id":"p1","ts":{later},"visitor_id":"w","url":"/"}}'.encode(), 0),
    ])
    flow.tick()
    lead = f'{{"event_id":"l9","ts":{DAY_START + 23 * MINUTE},"lead_id":"L9","channel":"email","visitor_id":"v"}}'
    flow.send(Kind.LEAD, lead.encode())  # created 08:23, after its opportunity
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in
                     heartbeats(list(settings.input_topics.values()), 1, DAY_START + 3 * 86_400_000)])
    flow.tick()
    record = flow.latest("attributed_pipeline", "1h", "2025-11-22T07:00:00Z", channel="(none)", model="linear")
    assert record is not None and record["value"] == 100 and record["final"], record
    assert not flow.counts.late_contributions


def test_event_far_ahead_of_the_processing_clock_is_rejected_and_moves_no_window() -> None:
    settings = _settings(KPI_PARTITIONS="1", KPI_MAX_FUTURE_SKEW="1d")
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    year_9999 = 253_402_300_799_000
    flow.send(Kind.LEAD, _lead("far", year_9999, lead_id="L1"))
    flow.send(Kind.LEAD, _lead("near", DAY_START + 86_400_000 - 1, lead_id="L2"))  # just inside the skew
    assert flow.counts.rejected == {("leads", "invalid_field"): 1}
    assert flow.dead_letters[0]["detail"] == "data.ts is more than 1d ahead of the processing clock"
    assert flow.counts.valid["leads"] == 1


def test_attribution_credits_sum_to_leads_with_touches_and_their_revenue() -> None:
    messages, _ = mixed()
    flow = _run(messages, _settings())
    _finish(flow, DAY_START + 3 * 86_400_000)
    leads_with_touches = {json.loads(raw)["lead_id"] for topic, raw in messages if topic == "leads"
                          and _is_json(raw) and json.loads(raw).get("visitor_id")}
    assert leads_with_touches
    day = "2025-11-22T00:00:00Z"
    for model in ("first_touch", "last_touch", "linear", "position_based", "time_decay"):
        credited = flow.latest("attributed_leads", "1d", day, model=model)
        assert credited is not None
        # Every lead of the set has a visitor with at least one page view before it.
        lead_volume = flow.latest("lead_volume", "1d", day)
        assert credited["numerator"] == lead_volume["numerator"] == len(leads_with_touches)
        revenue = flow.latest("revenue", "1d", day)
        attributed = flow.latest("attributed_revenue", "1d", day, model=model)
        assert revenue["numerator"] > 0 and attributed["numerator"] == revenue["numerator"]
        per_channel = [r["numerator"] for r in flow.records.values() if r["kpi"] == "attributed_leads"
                       and r["window"] == credited["window"] and r["dimensions"].get("model") == model
                       and set(r["dimensions"]) == {"model", "channel"}]
        assert round(sum(per_channel), 6) == credited["numerator"]


def _is_json(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def test_page_view_arriving_after_its_lead_still_counts_as_a_touch() -> None:
    settings = _settings(KPI_PARTITIONS="2")
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    lead = b'{"event_id":"l","ts":%d,"lead_id":"L1","channel":"email","visitor_id":"v1"}' % (DAY_START + 600_000)
    flow.send(Kind.LEAD, lead)
    assert flow.latest("attributed_leads", "1h", "2025-11-22T08:00:00Z", model="linear") is None
    view = b'{"event_id":"p","ts":%d,"visitor_id":"v1","url":"/x","channel":"paid_social"}' % (DAY_START + 60_000)
    flow.send(Kind.PAGE_VIEW, view)
    credited = flow.latest("attributed_leads", "1h", "2025-11-22T08:00:00Z", model="linear", channel="paid_social")
    assert credited is not None and credited["numerator"] == 1.0


def test_cohort_is_final_only_after_its_conversion_window() -> None:
    settings = _settings(KPI_PARTITIONS="1", KPI_COHORT_WINDOW="1d")
    clock = [DAY_START]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", DAY_START))
    _finish(flow, DAY_START + 3 * 3_600_000)
    cohort = flow.latest("cohort_conversion", "1h", "2025-11-22T08:00:00Z", from_stage="lead", to_stage="mql")
    assert cohort is not None and cohort["denominator"] == 1 and cohort["numerator"] == 0 and not cohort["final"]
    # Converted 20 hours later: the cohort matures after its own window closed.
    flow.send(Kind.STAGE_CHANGE, _stage("m", DAY_START + 20 * 3_600_000, "mql"))
    _finish(flow, DAY_START + 21 * 3_600_000)
    cohort = flow.latest("cohort_conversion", "1h", "2025-11-22T08:00:00Z", from_stage="lead", to_stage="mql")
    assert cohort["numerator"] == 1 and not cohort["final"]
    _finish(flow, DAY_START + 26 * 3_600_000)
    cohort = flow.latest("cohort_conversion", "1h", "2025-11-22T08:00:00Z", from_stage="lead", to_stage="mql")
    assert cohort["numerator"] == 1 and cohort["final"]


def test_large_batches_are_split_into_bounded_messages() -> None:
    from stream.pipeline.eventtime.entity import CELL_ENVELOPE_ITEMS
    from stream.pipeline.ingest import ENVELOPE_BYTES, encode_envelopes
    from stream.pipeline.wire import RoutedEvent

    items = [RoutedEvent("page-views", f"e{i}", 0, "v", {}, "t", 0, i, "x" * 1000) for i in range(1000)]
    envelopes = encode_envelopes(items, {"t:0": 5})
    assert len(envelopes) > 1 and all(len(envelope) < 2 * ENVELOPE_BYTES for envelope in envelopes)
    decoded = [json.loads(envelope) for envelope in envelopes]
    assert [item for d in decoded for item in d["ev"]] == [list(item) for item in items]
    assert [d["wm"] for d in decoded] == [{}] * (len(decoded) - 1) + [{"t:0": 5}]  # progress after all events
    # One batch of many page views: cell deltas leave in messages of bounded size, all applied.
    clock = [DAY_START]
    flow = LocalFlow(_settings(KPI_PARTITIONS="1"), clock=lambda: clock[0], input_partitions=1)
    views = [(Kind.PAGE_VIEW, b'{"event_id":"p%d","ts":%d,"visitor_id":"v%d","url":"/u%d"}'
              % (i, DAY_START + i, i, i % 7), 0) for i in range(CELL_ENVELOPE_ITEMS)]
    flow.send_batch(views)
    flow.settle()
    assert flow.latest("page_views", "1h", "2025-11-22T08:00:00Z")["numerator"] == CELL_ENVELOPE_ITEMS
    assert flow._offsets[("cells", 0)] > 1


def test_a_restored_cell_partition_sends_its_last_records_again_once() -> None:
    """A worker may stop after persisting cells and before sending their records: the next owner sends them."""
    settings = _settings(KPI_PARTITIONS="1")
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    flow.send(Kind.LEAD, _lead("a", DAY_START))
    flow.send(Kind.STAGE_CHANGE, _stage("b", DAY_START + MINUTE, "mql"))
    flow.settle()
    sent = {key: {**record, "emitted_at": None} for key, record in flow.records.items()}
    assert any(record["kpi"] == "mql_volume" for record in sent.values())
    restarted = CellStage(cell_config(settings), flow.cell_table)
    nothing = orjson.dumps({"src": 0, "d": [], "wm": HOLD})
    again = restarted.process(0, [(1000, nothing)], DAY_START)
    assert {record.key: {**record.record, "emitted_at": None} for record in again.records} == sent
    assert restarted.process(0, [(1001, nothing)], DAY_START).records == []


def _ts(raw: bytes) -> int | None:
    """The event time of a payload, None for one that has none (the set holds bad payloads too)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    ts = doc.get("ts") if isinstance(doc, dict) else None
    return ts if isinstance(ts, int) else None


class _CountedScans(dict[bytes, bytes]):
    """A table that counts the scans of it (``items``)."""

    scans = 0

    def items(self):  # type: ignore[no-untyped-def,override]
        self.scans += 1
        return super().items()


def test_after_a_restart_the_first_batch_indexes_every_owned_partition_in_one_scan() -> None:
    # Half the stream: leads waiting for stage changes, event ids kept, open and final cells in every partition.
    messages, _ = mixed(seed=3)
    half = messages[: len(messages) // 2]
    # Stage changes of leads that have not come yet wait in the lead's state, in every partition.
    last = max(ts for ts in (_ts(raw) for _, raw in half) if ts is not None)
    waiting = [(Kind.STAGE_CHANGE.value, _stage(f"w{i}", last, "mql", lead_id=f"later-{i}")) for i in range(12)]
    flow = _run(half + waiting, _settings(KPI_PARTITIONS="4"))
    now = DAY_START + 86_400_000

    def restarted(assign: bool) -> tuple[Any, _CountedScans, _CountedScans]:
        entity_table, cell_table = _CountedScans(flow.entity_table), _CountedScans(flow.cell_table)
        stages = build_stages(flow.settings, dict.fromkeys(flow.settings.input_topics.values(), INPUT_PARTITIONS),
                              entity_table, cell_table)
        if assign:
            stages.entities.assign(range(4))
            stages.cells.assign(range(4))
        return stages, entity_table, cell_table

    together, entity_scans, cell_scans = restarted(assign=True)
    alone, alone_entity_scans, alone_cell_scans = restarted(assign=False)
    resent: dict[str, list[list[Any]]] = {"together": [], "alone": []}
    for partition in range(4):
        for name, stages in (("together", together), ("alone", alone)):
            stages.entities.process(partition, [], now)
            out = stages.cells.process(partition, [], now)
            resent[name].append(sorted(json.dumps([r.key, r.record], sort_keys=True) for r in out.records))
    assert (entity_scans.scans, cell_scans.scans) == (1, 1)
    assert (alone_entity_scans.scans, alone_cell_scans.scans) == (4, 4)
    for partition in range(4):
        one, other = together.entities._owned.get(partition), alone.entities._owned.get(partition)
        assert one.waiting_leads == other.waiting_leads
        assert one.seen_by_time.buckets == other.seen_by_time.buckets
        cells_one, cells_other = together.cells._owned.get(partition), alone.cells._owned.get(partition)
        assert (cells_one.cells.open, cells_one.cells.final) == (cells_other.cells.open, cells_other.cells.final)
    # Each partition's cells are sent again by its own first batch, none twice, none left out.
    assert resent["together"] == resent["alone"] and all(resent["alone"])
    assert all(index.waiting_leads for index in together.entities._owned.values())
    assert all(index.seen_by_time.buckets for index in together.entities._owned.values())
