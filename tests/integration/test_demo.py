"""``kpi-stream demo`` with no cluster configured: everything starts, KPIs appear, Ctrl-C stops it all; and
whatever way it ends (Ctrl-C at any point, its worker exiting), it leaves no thread, client or process behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.brokers.embedded import EmbeddedBroker
from stream.settings import ENVIRONMENT, Settings
from stream.tools import demo
from tests.conftest import RunningBroker
from tests.integration.harness import Names, read_topic

DEMO_THREADS = ("generator", "kpi-reader")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _paid_search_cost_per_lead(port: int) -> bool:
    """Whether the demo's worker shows paid search's cost per lead of the hour and of the month."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    shown = {sample.labels["window"] for family in text_string_to_metric_families(text) for sample in family.samples
             if sample.name == "leadgen_cost_per_lead" and sample.labels.get("channel") == "paid_search"
             and sample.value > 0}
    return {"1h", "1mo"} <= shown


def _run_demo(env: dict[str, str]) -> str:
    """Run the demo until its worker has a cost per lead for paid search, then Ctrl-C; its whole output, once it
    exited 0 and drew that cost per lead."""
    env["COLUMNS"] = "140"
    demo = subprocess.Popen([sys.executable, "-m", "stream", "demo", "--rate", "300", "--seed", "3"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert demo.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode(errors="replace") for line in demo.stdout),
                              name="demo-output")
    reader.start()
    deadline = time.monotonic() + 120
    port = None
    while time.monotonic() < deadline and demo.poll() is None:
        if port is None:
            found = re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", "".join(lines))
            port = int(found.group(1)) if found else None
        elif _paid_search_cost_per_lead(port):
            break
        time.sleep(0.5)
    # The worker has the records it sent; the view's reader polls them every 0.2 s and the view redraws every
    # second: its last frame shows them after that (with room for a loaded machine). Ctrl-C stops the traffic
    # first; the last frame comes once every KPI's held-back record is out, so the hour and the month agree.
    time.sleep(4)
    demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
    demo.wait(timeout=90)
    reader.join(timeout=10)
    text = "".join(lines)
    assert demo.returncode == 0, text
    assert "stopped; logs in" in text
    assert "the traffic stopped, the last KPI records come in" in text
    # The last frame shows a cost per lead for the paid channels and a lead volume for all traffic.
    paid = re.search(r"paid_search\s*│\s*(\d+)\s*│\s*([\d,.]+)\s*│\s*([\d,.]+)", text)
    assert paid is not None and int(paid.group(1)) > 0 and float(paid.group(3).replace(",", "")) > 0, text[-3000:]
    # Beside the hour, the month to date (the demo's worker keeps 1mo windows) with its own leads and cost per lead.
    month = text.rsplit("Month to date, from ", 1)[-1]
    to_date = re.search(r"paid_search\s*│\s*(\d+)\s*│\s*([\d,.]+)\s*│\s*([\d,.]+)", month)
    assert to_date is not None and int(to_date.group(1)) >= int(paid.group(1)), month[:3000]
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


def _demo_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name in DEMO_THREADS]


def _client_threads() -> int:
    """librdkafka's threads in this process (named rdk:...): a confluent-kafka client's live until it is closed."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended while the folder was read
            count += (task / "comm").read_text().startswith("rdk:")
    return count


@pytest.fixture
def own_cluster(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with no cluster configured (the demo starts its own broker), whatever the session set."""
    for var, _, _ in ENVIRONMENT.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "140")
    return Settings.from_env({})


def _worker_pid() -> int | None:
    found = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "stream worker"], capture_output=True,
                           text=True, check=False).stdout.split()
    return int(found[0]) if found else None


def _counted_events(pid: int) -> float:
    """Valid events the demo's worker has counted (0 until it answers): traffic went all the way through."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    port = next(int(entry.split(b"=", 1)[1]) for entry in environ if entry.startswith(b"KPI_WEB_PORT="))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "leadgen_events_total")


def test_the_demo_stops_its_threads_and_clients_when_its_worker_exits(
        own_cluster: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # In this process, so that the demo's threads and its clients' native threads can be counted.
    clients_before = _client_threads()
    killed_at: list[float] = []
    # What still ran when the broker began to stop: the threads' last sends and their clients' closing need it.
    at_broker_stop: list[tuple[list[str], int]] = []
    stop_broker = EmbeddedBroker.stop

    def noted_stop(broker: EmbeddedBroker) -> None:
        at_broker_stop.append((_demo_threads(), _client_threads()))
        stop_broker(broker)

    monkeypatch.setattr(EmbeddedBroker, "stop", noted_stop)

    def kill_the_worker_once_events_flow() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pid = _worker_pid()
            if pid is not None and len(_demo_threads()) == len(DEMO_THREADS) and _counted_events(pid) > 0:
                os.kill(pid, signal.SIGKILL)
                killed_at.append(time.monotonic())
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_worker_once_events_flow, name="worker-killer")
    killer.start()
    try:
        # --duration bounds the run should the worker never be found and killed.
        status = demo.run_demo(["--rate", "300", "--seed", "5", "--duration", "150"], own_cluster)
    finally:
        killer.join()
    assert killed_at, "the demo's worker and threads were never seen running"
    returned_after = time.monotonic() - killed_at[0]
    print(f"\nthe demo returned {status} {returned_after:.1f} s after its worker was killed")
    assert status == 1
    assert returned_after < 20
    threads_left, clients_left = at_broker_stop[0]
    assert threads_left == [], "threads still running when the broker was stopped"
    assert clients_left <= clients_before, "clients still open when the broker was stopped"
    assert _demo_threads() == []
    assert _client_threads() <= clients_before


def _interrupt_after(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, then Ctrl-C as it ends (what the default SIGINT handler raises in the main thread)."""

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise KeyboardInterrupt

    return interrupted


@pytest.mark.parametrize("interrupted", ["starting the broker", "creating the topics"])
def test_ctrl_c_before_the_live_view_stops_what_had_started(
        interrupted: str, own_cluster: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if interrupted == "starting the broker":
        monkeypatch.setattr(EmbeddedBroker, "start", _interrupt_after(EmbeddedBroker.start))
    else:
        monkeypatch.setattr(demo, "ensure_topics", _interrupt_after(demo.ensure_topics))
    try:
        status = demo.run_demo(["--rate", "300", "--seed", "5"], own_cluster)
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C while {interrupted} escaped the demo")
    text = capsys.readouterr().out
    assert status == 0
    assert "stopped; logs in" in text
    broker_port = int(re.search(r"embedded broker \(Tansu\) on 127\.0\.0\.1:(\d+)", text).group(1))
    assert not _listening(broker_port)  # the broker runs in its own session: Ctrl-C reaches only the demo
