"""A flood of distinct campaigns, channels and assets, and a bot visitor: bounded labels and bounded memory.

Run with ``-s`` to see the series count and the worker's peak memory that ``docs/reliability.md`` quotes.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.eventset import DAY_START, doc
from tests.integration.harness import Names, produce, start_worker
from tests.integration.outcome import RATES, beats, latest_records, wait_for_finals
from tests.reference import assert_folded_exact, compute, from_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Campaigns and channels; assets twice as many. CI runs 1,000 to stay within its time budget; the scale
# is KPI_TEST_FLOOD_DISTINCT=100000 (about 400,000 events).
DISTINCT = int(os.environ.get("KPI_TEST_FLOOD_DISTINCT", "1000"))
BOT_VIEWS = 3_000
CAMPAIGN_LIMIT, CHANNEL_LIMIT = 20, 50  # the defaults (KPI_CAMPAIGN_LABEL_LIMIT, and the channel fold)
# Own KPI records per window and level; the flood has 3,600 distinct values an hour and 86,400 a day.
VALUE_LIMIT = 100


def _flood(names: Names) -> list[tuple[str, int, bytes]]:
    out: list[tuple[int, str, int, bytes]] = []
    for i in range(DISTINCT):
        ts = DAY_START + i * 1_000
        out.append((ts, names.topic("spend"), i % 4, doc(f"s{i}", ts, channel="paid_search", campaign=f"campaign-{i}",
                                                         amount="1.00", currency="USD")))
        out.append((ts, names.topic("leads"), i % 4, doc(f"l{i}", ts, lead_id=f"L{i}", channel=f"channel-{i}",
                                                         campaign=f"lead-campaign-{i}", asset=f"/asset/{i}")))
    for i in range(2 * DISTINCT):
        ts = DAY_START + i * 500
        out.append((ts, names.topic("page-views"), i % 4, doc(f"p{i}", ts, visitor_id=f"v{i}", url=f"/asset/{i}",
                                                              channel="organic", campaign=f"pv-{i}")))
    # One visitor viewing thousands of pages: its touch history is capped.
    for i in range(BOT_VIEWS):
        ts = DAY_START + i * 700
        out.append((ts, names.topic("page-views"), i % 4, doc(f"bot{i}", ts, visitor_id="bot", url=f"/bot/{i}",
                                                              channel="paid_social")))
    # In event-time order, as a live source sends them: none is late, however long the flood.
    out.sort(key=lambda item: item[0])
    return [(topic, partition, raw) for _, topic, partition, raw in out]


def test_flood_of_distinct_labels_and_a_bot_keeps_series_and_memory_bounded(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    messages = _flood(names)
    sent_beats = beats(names)
    worker = start_worker(names, bootstrap, tmp_path, KPI_VALUE_LIMIT=str(VALUE_LIMIT))
    try:
        started = time.monotonic()
        sent = produce(bootstrap, messages) + produce(bootstrap, sent_beats)
        wait_for_finals(worker, sent, timeout_s=max(120.0, sent / 500))
        took = time.monotonic() - started
        assert worker.total("leadgen_events_total") == sent
        text = worker.metrics_text()
        status = Path(f"/proc/{worker.process.pid}/status").read_text()
        assert not worker.errors(), worker.errors()
        folded = worker.total("leadgen_folded_deltas_total")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    # The KPI topics fold values past the limit into `other`; what they name is exact, and nothing is lost.
    records = latest_records(bootstrap, names)
    want = compute([(topic.removeprefix(f"{names.prefix}-"), raw) for topic, _, raw in messages + sent_beats], RATES)
    assert_folded_exact(from_records(records), want, VALUE_LIMIT)
    assert folded > 0
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    values: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        for label, value in sample.labels.items():
            values[label].add(value)
    # The first values seen keep their label, every other one is folded into `other` ("" is no campaign, `all`
    # the all-traffic roll-up).
    assert len(values["campaign"] - {"other", ""}) <= CAMPAIGN_LIMIT, sorted(values["campaign"])[:30]
    assert len(values["channel"] - {"other", "", "all"}) <= CHANNEL_LIMIT, sorted(values["channel"])[:60]
    assert not any(value.startswith("/asset/") or value.startswith("/bot/") for vs in values.values() for value in vs)
    assert len(samples) < 5_000
    peak_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    print(f"\nflood: {len(messages)} events, {DISTINCT} campaigns, {DISTINCT} channels, {2 * DISTINCT} assets, "
          f"a bot with {BOT_VIEWS} views: {len(samples)} series on /metrics, worker peak RSS {peak_mb:.0f} MB, "
          f"produced to all final in {took:.0f} s; {len(records)} KPI keys, {folded:.0f} deltas folded")
    assert peak_mb < 500
