"""The whole dataflow in a reporting time zone: every calendar window equals the batch computation's.

The fixed event set (four hours of traffic, ``tests.eventset``) is moved to the nights the clocks change in New
York (the repeated hour of 2026-11-01, the missing one of 2026-03-08), to a day in Kolkata (+05:30: hours start at
:30 UTC) and to a day in UTC, and run with hours, days, weeks, months, quarters and years. The reference
(``tests/reference.py``) lays its windows out with ``zoneinfo`` as the README describes them, sharing no code
with ``stream.core.calendar``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from stream.pipeline.eventtime.join import StateRefused
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from tests.eventset import DAY_START, heartbeats, mixed, shifted
from tests.pipeline.feeding import INPUT_PARTITIONS, KINDS, fed_and_closed
from tests.reference import compute, from_records, mismatches

RATES = {"EUR": Decimal("1.08")}
SIZES = ("1h", "1d", "1w", "1mo", "1q", "1y")
DAY = 86_400_000


# (zone, the UTC instant the event set's first hour is moved to: local midnight of the day)
NIGHTS = [
    pytest.param("America/New_York", 1_793_505_600_000, id="new-york-fall-back-2026-11-01"),  # 04:00Z = 00:00 EDT
    pytest.param("America/New_York", 1_772_946_000_000, id="new-york-spring-forward-2026-03-08"),  # 05:00Z = 00:00 EST
    pytest.param("Asia/Kolkata", 1_795_285_800_000, id="kolkata-2026-11-22"),  # 18:30Z the day before
    pytest.param("UTC", DAY_START, id="utc-2025-11-22"),
]


@pytest.mark.parametrize(("zone", "midnight"), NIGHTS)
def test_calendar_windows_in_a_reporting_zone_equal_the_batch_computation(zone: str, midnight: int) -> None:
    messages, expected = mixed(seed=3)
    # The event set starts at 08:00 UTC on its day; moved so that it starts at local midnight of the night.
    moved = shifted(messages, midnight - DAY_START)
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "3", "KPI_TIMEZONE": zone,
                                  "KPI_WINDOW_SIZES": ",".join(SIZES)})
    # Heartbeats past the end of the year (and the cohorts' 90 days) make every window final.
    flow, every = fed_and_closed(moved, settings, midnight, midnight + 460 * DAY)
    want = compute(every, RATES, sizes=SIZES, zone=zone)
    records = list(flow.records.values())
    got = from_records(records)
    wrong = mismatches(got, want)
    assert not wrong, f"{len(wrong)} KPI keys differ, e.g. {wrong[:5]}"
    assert {record["window"]["size"] for record in records} == set(SIZES)
    assert all(record["window"]["zone"] == zone for record in records)
    # Every window of the data (all but the heartbeats', which start far later) is final.
    data = [record for record in records if start_ms(record) <= midnight + DAY]
    assert data and all(record["final"] for record in data)
    assert sum(flow.counts.rejected.values()) == expected["rejected"]


def start_ms(record: dict) -> int:
    return round(datetime.fromisoformat(record["window"]["start"].replace("Z", "+00:00")).timestamp() * 1000)


def _settings_in(zone: str, week_start: str = "monday") -> Settings:
    return Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "1", "KPI_TIMEZONE": zone,
                              "KPI_WEEK_START": week_start, "KPI_WINDOW_SIZES": "1h,1d,1w"})


def _fed(settings: Settings, messages: list[tuple[str, bytes]], tables: LocalFlow | None = None) -> LocalFlow:
    """A flow (on the tables of ``tables``, if given: the same worker restarted) fed ``messages``."""
    flow = LocalFlow(settings, clock=lambda: DAY_START, input_partitions=1)
    if tables is not None:
        flow.entity_table.update(tables.entity_table)
        flow.cell_table.update(tables.cell_table)
    for start in range(0, len(messages), 5):
        flow.send_batch([(KINDS[topic], raw, 0) for topic, raw in messages[start:start + 5]])
    return flow


@pytest.mark.parametrize(("before", "after"), [
    (("UTC", "monday"), ("America/New_York", "monday")),
    (("America/New_York", "monday"), ("Asia/Kolkata", "monday")),
    (("America/New_York", "monday"), ("America/New_York", "sunday")),
])
def test_state_made_under_another_calendar_is_refused_naming_both(before: tuple[str, str],
                                                                  after: tuple[str, str]) -> None:
    """Its open windows would mix two layouts, and retractions of facts counted under the old one would reach
    the new one's windows: the worker stops, saying what changed and what to do."""
    messages, _ = mixed(seed=4)
    half = len(messages) // 2
    first = _fed(_settings_in(*before), messages[:half])
    with pytest.raises(StateRefused) as refused:
        _fed(_settings_in(*after), messages[half:], tables=first)
    text = str(refused.value)
    assert f"KPI_TIMEZONE={before[0]} and KPI_WEEK_START={before[1]}" in text, text
    assert f"KPI_TIMEZONE={after[0]} and KPI_WEEK_START={after[1]}" in text, text
    assert "KPI_APP_ID" in text


def test_state_of_earlier_versions_is_taken_as_utc() -> None:
    """What versions before calendars wrote names no calendar; written in UTC, it still names none."""
    messages, _ = mixed(seed=4)
    half = len(messages) // 2
    first = _fed(_settings_in("UTC"), messages[:half])
    assert not [value for key, value in {**first.entity_table, **first.cell_table}.items() if b'"z":' in value]
    again = _fed(_settings_in("UTC"), messages[half:], tables=first)  # carries on
    assert again.records
    with pytest.raises(StateRefused):
        _fed(_settings_in("Europe/London"), messages[half:], tables=first)
    in_new_york = _fed(_settings_in("America/New_York"), messages[:half])
    assert [value for value in in_new_york.cell_table.values() if b'"z":"America/New_York|monday"' in value]


# Additive KPIs: a bigger calendar window's numerator is the sum of its parts'.
ADDITIVE = ("lead_volume", "mql_volume", "won_volume", "page_views", "cost_per_lead", "pipeline")
PARTS = {"1mo": "1d", "1q": "1mo", "1y": "1q"}


@st.composite
def spread_events(draw: st.DrawFn) -> list[tuple[int, str, bytes]]:
    """Leads, stage changes, page views and spend over about 300 days around two clock changes, in time order."""
    start = 1_767_243_600_000  # 2026-01-01T00:00:00-05:00
    serial = iter(range(10**6))
    events = []
    for _ in range(draw(st.integers(1, 40))):
        ts = start + draw(st.integers(0, 300 * 24 * 60)) * 60_000
        kind = draw(st.sampled_from(["leads", "stage-changes", "page-views", "spend"]))
        channel = draw(st.sampled_from(["email", "paid_social"]))
        fields: dict[str, object] = {"event_id": f"e{next(serial)}", "ts": ts}
        if kind == "leads":
            fields |= {"lead_id": f"L{next(serial)}", "channel": channel}
        elif kind == "stage-changes":
            fields |= {"lead_id": "L0", "stage": draw(st.sampled_from(["mql", "won"]))}
        elif kind == "page-views":
            fields |= {"visitor_id": f"v{draw(st.integers(0, 3))}", "url": "/pricing", "channel": channel}
        else:
            fields |= {"channel": channel, "amount": str(draw(st.integers(1, 500))), "currency": "USD"}
        events.append((ts, kind, json.dumps(fields).encode()))
    lead = json.dumps({"event_id": "lead-L0", "ts": start, "lead_id": "L0", "channel": "email"}).encode()
    return sorted([(start, "leads", lead), *events])


@given(spread_events())
@hypothesis_settings(max_examples=int(os.environ.get("KPI_PROPERTY_EXAMPLES", "25")), deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
def test_each_month_is_its_days_each_quarter_its_months_each_year_its_quarters(
        events: list[tuple[int, str, bytes]]) -> None:
    zone = "America/New_York"
    settings = Settings.from_env({"KPI_PARTITIONS": "2", "KPI_TIMEZONE": zone, "KPI_WINDOW_SIZES": "1d,1mo,1q,1y"})
    clock = [events[0][0]]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=1)
    for ts, kind, raw in events:
        clock[0] = ts
        flow.send_batch([(KINDS[kind], raw, 0)])
    clock[0] = beat_at = events[-1][0] + 400 * DAY
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in
                     heartbeats(list(settings.input_topics.values()), 1, beat_at)])
    flow.tick()
    records = [r for r in flow.records.values() if r["kpi"] in ADDITIVE and start_ms(r) < events[-1][0] + DAY]
    assert not mismatches(from_records(records),
                          {key: value for key, value in compute([(kind, raw) for _, kind, raw in events], RATES,
                                                                sizes=("1d", "1mo", "1q", "1y"), zone=zone).items()
                           if key[0] in ADDITIVE})
    sums: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for record in records:
        for bigger, part in PARTS.items():
            if record["window"]["size"] == part:
                sums[(record["kpi"], bigger, _container(record, bigger, zone), _dims(record))] += record["numerator"]
    for record in records:
        if record["window"]["size"] in PARTS:
            key = (record["kpi"], record["window"]["size"], record["window"]["start"], _dims(record))
            assert sums[key] == pytest.approx(record["numerator"]), key
            assert record["final"]


def _dims(record: dict) -> str:
    return json.dumps(record["dimensions"], sort_keys=True)


def _container(record: dict, size: str, zone: str) -> str:
    """The start, as a record of ``size`` writes it, of the window of ``size`` that holds ``record``'s window."""
    start = start_ms(record)
    moment = datetime.fromtimestamp(start / 1000, ZoneInfo(zone))
    month = {"1mo": moment.month, "1q": moment.month - (moment.month - 1) % 3, "1y": 1}[size]
    first = moment.replace(month=month, day=1, hour=0, minute=0, second=0, fold=0)
    return first.isoformat()


TARGETS = """
[[targets]]
kpi = "lead_volume"
period = "1mo"
at_least = 40

[[targets]]
kpi = "lead_volume"
period = "1mo"
channel = "paid_social"
at_least = 10

[[targets]]
kpi = "cost_per_lead"
period = "1mo"
channel = "paid_social"
at_most = 30

[[targets]]
kpi = "pipeline"
period = "1d"
at_least = "100000"

[[targets]]
kpi = "lead_volume"
period = "1mo"
channel = "webinar"
at_least = 5
"""


def test_targets_are_attained_and_paced_from_the_kpis_of_their_windows(tmp_path: Path) -> None:
    """Each target's records: the KPI ÷ the target (the KPI as the batch computation has it), and that ÷ the
    share of its window the watermark has passed; final with the window, when the whole period has elapsed."""
    (tmp_path / "targets.toml").write_text(TARGETS)
    zone, midnight = "America/New_York", 1_793_505_600_000
    messages, _ = mixed(seed=6)
    moved = shifted(messages, midnight - DAY_START)
    settings = Settings.from_env({"KPI_EXCHANGE_RATES": "EUR=1.08", "KPI_PARTITIONS": "3", "KPI_TIMEZONE": zone,
                                  "KPI_WINDOW_SIZES": "1h,1d,1mo", "KPI_TARGETS_FILE": str(tmp_path / "targets.toml")})
    clock = [midnight]
    flow = LocalFlow(settings, clock=lambda: clock[0], input_partitions=INPUT_PARTITIONS)
    for start in range(0, len(moved), 5):
        flow.send_batch([(KINDS[topic], raw, 0) for topic, raw in moved[start:start + 5]])
        clock[0] += 10
    flow.tick()
    clock[0] += 15_000  # the partitions without events stop holding the watermark back
    flow.tick()
    month = "2026-11-01T00:00:00-04:00"
    live = {(r["kpi"], r["dimensions"]["target_kpi"], r["dimensions"].get("channel", "")): r
            for r in flow.records.values() if r["kpi"].startswith("target_") and r["window"]["start"] == month}
    pacing = live[("target_pacing", "lead_volume", "")]
    assert 0 < pacing["denominator"] < 0.01 and not pacing["final"]  # a few hours of a 30-day month
    assert pacing["value"] == pytest.approx(pacing["numerator"] / pacing["denominator"])
    # No webinar lead in the data: the month's target still says 0 of 5, from the watermark's first month.
    nothing = live[("target_attainment", "lead_volume", "webinar")]
    assert (nothing["numerator"], nothing["denominator"], nothing["value"]) == (0, 5.0, 0.0)
    assert live[("target_pacing", "lead_volume", "webinar")]["value"] == 0.0
    # The rest of the month passes (a heartbeat in December): every window is final, its period fully elapsed.
    clock[0] = beat_at = midnight + 40 * DAY
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in
                     heartbeats(list(settings.input_topics.values()), INPUT_PARTITIONS, beat_at)])
    flow.tick()
    want = compute(moved, RATES, sizes=("1h", "1d", "1mo"), zone=zone)
    month_ms = midnight

    def actual(kpi: str, size: str, start: int, **dims: str) -> float:
        numerator, denominator = want[(kpi, size, start, tuple(sorted(dims.items())))]
        return numerator if denominator is None else numerator / denominator

    final = {(r["kpi"], r["dimensions"]["target_kpi"], r["dimensions"].get("channel", ""), r["window"]["start"]): r
             for r in flow.records.values() if r["kpi"].startswith("target_")}
    expected = {("lead_volume", ""): actual("lead_volume", "1mo", month_ms) / 40,
                ("lead_volume", "paid_social"): actual("lead_volume", "1mo", month_ms, channel="paid_social") / 10,
                ("cost_per_lead", "paid_social"): actual("cost_per_lead", "1mo", month_ms, channel="paid_social") / 30}
    for (kpi, channel), attained in expected.items():
        record = final[("target_attainment", kpi, channel, month)]
        assert record["value"] == pytest.approx(attained) and record["final"], record
        paced = final[("target_pacing", kpi, channel, month)]
        assert paced["value"] == pytest.approx(attained) and paced["final"], paced  # the whole period elapsed
    day = final[("target_attainment", "pipeline", "", month)]  # the day of the data, same start as the month
    assert day["window"]["size"] == "1d"
    assert day["value"] == pytest.approx(actual("pipeline", "1d", month_ms) / 100000)
    assert final[("target_pacing", "lead_volume", "", month)]["dimensions"]["bound"] == "at_least"
    assert final[("target_pacing", "cost_per_lead", "paid_social", month)]["dimensions"]["bound"] == "at_most"
