"""A worker whose settings the broker refuses ends at once, its last line naming the setting to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.brokers.embedded import free_port
from stream.runtime.batches import EXIT_STATE_REFUSED
from stream.runtime.faust_internals import EXIT_SETTING_REFUSED
from tests.conftest import RunningBroker
from tests.eventset import mixed
from tests.integration.harness import Names, produce, run_to_exit, start_worker
from tests.integration.outcome import as_input

pytestmark = [pytest.mark.integration]


def test_a_refused_idempotent_producer_ends_the_worker_with_one_line_naming_the_setting(
        tansu: RunningBroker, names: Names, tmp_path: Path) -> None:
    # Tansu answers InitProducerId with UNKNOWN_SERVER_ERROR, as a cluster that refuses idempotence would.
    env = names.env(tansu.bootstrap_servers, free_port(), KPI_IDEMPOTENT_PRODUCER="true",
                    KPI_DATA_DIR=str(tmp_path / "data"))
    code, took, text = run_to_exit(env, tmp_path / "worker.log", timeout_s=60)
    last = text.strip().splitlines()[-1]
    print(f"\nrefused idempotent producer: exit {code} after {took:.1f} s: {last}")
    assert "KPI_IDEMPOTENT_PRODUCER=false" in last and "refused an idempotent producer" in last, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert code == EXIT_SETTING_REFUSED
    assert took < 20, took


def test_a_worker_restarted_in_another_time_zone_refuses_the_state_naming_both(
        bootstrap: str, names: Names, tmp_path: Path) -> None:
    """The state of an app laid out in UTC is refused by a worker started with KPI_TIMEZONE=America/New_York:
    exit 78 (a setting to change), its last line naming both zones and the way out, no traceback."""
    messages, _ = mixed(seed=8)
    first = start_worker(names, bootstrap, tmp_path, label="utc")
    try:
        sent = produce(bootstrap, as_input(names, messages[:60], seed=1))
        first.wait_until(lambda: first.accounted() >= sent * 0.8, what="most of the events")
    finally:
        assert first.stop() == 0, first.log_tail()
    env = names.env(bootstrap, free_port(), KPI_TIMEZONE="America/New_York", KPI_DATA_DIR=str(tmp_path / "data-ny"))
    code, took, text = run_to_exit(env, tmp_path / "new-york.log")
    last = text.strip().splitlines()[-1]
    print(f"\nanother time zone: exit {code} after {took:.1f} s: {last}")
    assert "KPI_TIMEZONE=UTC" in last and "KPI_TIMEZONE=America/New_York" in last and "KPI_APP_ID" in last, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert code == EXIT_STATE_REFUSED
