"""Personal data in input never leaves the worker except inside a dead-letter record's original payload."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from stream.core.kpis import FAMILIES
from tests.eventset import DAY_START, MINUTE, doc
from tests.integration.harness import Names, produce, read_topic, read_topics, start_worker
from tests.integration.outcome import beats

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EMAIL = "jane.doe.private@example.com"
NAME = "Jane Q. Privatesurname"
PHONE = "+44 20 7946 0958"
SECRET_VALUES = (EMAIL, NAME, PHONE, "jane.doe.private")
PERSONAL = {"email": EMAIL, "full_name": NAME, "phone": PHONE, "form": {"e-mail": EMAIL, "contact": NAME}}


def _events(names: Names) -> tuple[list[tuple[str, int, bytes]], int]:
    """Good events carrying personal fields, and bad ones with personal data where the error is."""
    ts = DAY_START + 5 * MINUTE
    good = [
        ("page-views", doc("p1", ts, visitor_id="v1", url="/pricing", channel="email", **PERSONAL)),
        ("leads", doc("l1", ts + MINUTE, lead_id="L1", channel="email", visitor_id="v1", asset="/pricing",
                       **PERSONAL)),
        ("stage-changes", doc("s1", ts + 2 * MINUTE, lead_id="L1", stage="mql", **PERSONAL)),
        ("spend", doc("c1", ts, channel="email", amount="10", currency="USD", **PERSONAL)),
    ]
    bad = [
        ("leads", json.dumps({"event_id": "b1", "ts": EMAIL, "lead_id": "L2", "channel": "email"}).encode()),
        ("leads", f'{{"event_id":"b2","email":"{EMAIL}",'.encode()),  # truncated JSON
        ("stage-changes", doc("b3", ts, lead_id="L1", stage=EMAIL)),  # unknown stage that is an e-mail address
        ("spend", doc("b4", ts, channel="email", amount=NAME, currency="USD")),
        ("page-views", doc("b5", ts, visitor_id="v1", url={"phone": PHONE})),
        ("leads", EMAIL.encode("utf-16")),  # not UTF-8
    ]
    messages = [(names.topic(topic), 0, raw) for topic, raw in good + bad]
    return messages + beats(names), len(bad)


def test_personal_fields_never_reach_metrics_kpi_topics_logs_or_dead_letter_detail(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    messages, bad = _events(names)
    worker = start_worker(names, bootstrap, tmp_path, KPI_LOG_LEVEL="debug")
    try:
        sent = produce(bootstrap, messages)
        worker.wait_until(lambda: worker.accounted() >= sent, what="every event accounted")
        worker.wait_quiet("leadgen_kpi_records_total")
        metrics_text = worker.metrics_text()
        assert worker.total("leadgen_events_rejected_total") == bad
    finally:
        assert worker.stop() == 0, worker.log_tail()
    kpi_topics = read_topics(bootstrap, [names.topic(f"kpi-{family}") for family in FAMILIES])
    kpi_text = b"".join(part or b"" for records in kpi_topics.values() for record in records for part in record)
    assert kpi_text, "no KPI records to check"
    dead = [json.loads(value) for _, value in read_topic(bootstrap, names.topic("dead-letters"))]
    assert len(dead) == bad
    for secret in SECRET_VALUES:
        assert secret not in metrics_text
        assert secret.encode() not in kpi_text
        assert secret not in worker.log_path.read_text(errors="replace")
        for record in dead:
            assert secret not in record["detail"] and secret not in record["reason"]
    # The dead-letter record keeps the original bytes, as documented, so the event can be repaired and re-sent.
    payloads = [record.get("payload") or base64.b64decode(record["payload_base64"]).decode("utf-16", "replace")
                for record in dead]
    assert sum(EMAIL in payload for payload in payloads) >= 3
