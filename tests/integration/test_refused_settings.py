"""A worker whose settings the broker refuses ends at once, its last line naming the setting to change."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stream.broker import free_port
from stream.runtime.faust_internals import EXIT_SETTING_REFUSED
from tests.conftest import RunningBroker
from tests.integration.harness import Names, Worker

pytestmark = [pytest.mark.integration]


def test_a_refused_idempotent_producer_ends_the_worker_with_one_line_naming_the_setting(
        tansu: RunningBroker, names: Names, tmp_path: Path) -> None:
    # Tansu answers InitProducerId with UNKNOWN_SERVER_ERROR, as a cluster that refuses idempotence would.
    env = names.env(tansu.bootstrap_servers, free_port(), KPI_IDEMPOTENT_PRODUCER="true",
                    KPI_DATA_DIR=str(tmp_path / "data"))
    started = time.monotonic()
    worker = Worker(env, tmp_path / "worker.log")
    try:
        code = worker.process.wait(timeout=60)
    finally:
        worker.stop()
    took = time.monotonic() - started
    text = worker.log_path.read_text(errors="replace")
    last = text.strip().splitlines()[-1]
    print(f"\nrefused idempotent producer: exit {code} after {took:.1f} s: {last}")
    assert "KPI_IDEMPOTENT_PRODUCER=false" in last and "refused an idempotent producer" in last, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert code == EXIT_SETTING_REFUSED
    assert took < 20, took
