"""``kpi-stream demo`` with no cluster configured: everything starts, KPIs appear, Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import RunningBroker
from tests.integration.harness import Names, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _run_demo(env: dict[str, str]) -> str:
    """Run the demo for 35 s, then Ctrl-C; its whole output, once it exited 0 and drew a cost per lead."""
    env["COLUMNS"] = "140"
    demo = subprocess.Popen([sys.executable, "-m", "stream", "demo", "--rate", "300", "--seed", "3"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(35)
    demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = demo.communicate(timeout=90)
    text = output.decode(errors="replace")
    assert demo.returncode == 0, text
    assert "stopped; logs in" in text
    # The last frame shows a cost per lead for the paid channels and a lead volume for all traffic.
    paid = re.search(r"paid_search\s*│\s*(\d+)\s*│\s*([\d,.]+)\s*│\s*([\d,.]+)", text)
    assert paid is not None and int(paid.group(1)) > 0 and float(paid.group(3).replace(",", "")) > 0, text[-3000:]
    metrics_port = int(re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", text).group(1))
    assert not _listening(metrics_port)  # the worker's web server is gone
    return text


def test_demo_shows_live_kpis_and_ctrl_c_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KPI_"))}
    text = _run_demo(env)
    broker_port = int(re.search(r"embedded broker \(Tansu\) on 127\.0\.0\.1:(\d+)", text).group(1))
    assert not _listening(broker_port)  # nothing is left behind: the embedded broker is gone too


def test_demo_on_a_configured_cluster_runs_its_worker_there(bootstrap: str, names: Names,
                                                            session_broker: RunningBroker) -> None:
    """With ``KAFKA_BOOTSTRAP_SERVERS`` set (the session's broker), the demo starts no broker of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KPI_"))}
    # The settings a worker needs on the session's broker, as an operator of that cluster sets them (on Tansu:
    # no idempotent producer, which it refuses).
    env.update(session_broker.worker_env)
    env.update(names.env(bootstrap, 0))
    del env["KPI_WEB_PORT"], env["KPI_EXCHANGE_RATES"]  # the demo picks its port and rates
    text = _run_demo(env)
    assert "embedded broker" not in text
    assert read_topic(bootstrap, names.topic("kpi-cost-per-lead"), timeout_s=20)  # its KPIs went to that cluster
