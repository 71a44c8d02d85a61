"""``kpi-stream kafka``: a SIGTERM stops the broker it runs and removes its data, as Ctrl-C does."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.brokers.embedded import free_port

pytestmark = [pytest.mark.integration]


def test_sigterm_stops_the_broker_and_removes_its_data(tmp_path: Path, broker_kind: str) -> None:
    if broker_kind != "kafka":
        pytest.skip("runs Apache Kafka: the session's broker is Tansu")
    log = tmp_path / "kafka.log"
    command = subprocess.Popen([sys.executable, "-m", "stream", "kafka", str(free_port()), "--log", str(log)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert command.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = command.stdout.readline()
        lines.append(line)
        if line.startswith("KAFKA_BOOTSTRAP_SERVERS=") or not line:
            break
    assert lines[-1].startswith("KAFKA_BOOTSTRAP_SERVERS="), "".join(lines)
    children = subprocess.run(["pgrep", "-P", str(command.pid)], capture_output=True, text=True).stdout.split()
    assert children, "no broker process under the command"
    command.send_signal(signal.SIGTERM)
    assert command.wait(timeout=60) == 0
    left = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert not left, f"broker processes left running: {left}"
