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

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_shows_live_kpis_and_ctrl_c_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KPI_"))}
    env["COLUMNS"] = "140"
    demo = subprocess.Popen([sys.executable, "-m", "stream", "demo", "--rate", "300", "--seed", "3"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(35)
    demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = demo.communicate(timeout=90)
    text = output.decode(errors="replace")
    assert demo.returncode == 0, text
    broker_port = int(re.search(r"embedded broker \(Tansu\) on 127\.0\.0\.1:(\d+)", text).group(1))
    metrics_port = int(re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", text).group(1))
    assert "stopped; logs in" in text
    # The last frame shows a cost per lead for the paid channels and a lead volume for all traffic.
    paid = re.search(r"paid_search\s*│\s*(\d+)\s*│\s*([\d,.]+)\s*│\s*([\d,.]+)", text)
    assert paid is not None and int(paid.group(1)) > 0 and float(paid.group(3).replace(",", "")) > 0, text[-3000:]
    # Nothing is left behind: the broker and the worker's web server are gone.
    assert not _listening(broker_port)
    assert not _listening(metrics_port)
