"""The worker's start on a cluster whose group coordinator moves, met on purpose with librdkafka's mock cluster.

Brokers answer NOT_COORDINATOR (16), COORDINATOR_NOT_AVAILABLE (15) or COORDINATOR_LOAD_IN_PROGRESS (14) while
the group's coordinator moves: a rolling restart, a leader election, a new cluster creating
``__consumer_offsets``. The worker's start path (``kpi-stream worker`` up to the point where Faust takes over:
topics, then the group check) runs in a child process, so that a crash of native code is an exit status here,
not the end of the test session. The mock cluster counts the requests it answered: each test shows that the
errors pushed were all met, so none can pass because the answers happened to come right.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stream.kafka.clients import topic_plan
from stream.settings import Settings
from tests.kafka.mock_cluster import (
    COORDINATOR_LOAD_IN_PROGRESS,
    COORDINATOR_NOT_AVAILABLE,
    FIND_COORDINATOR,
    GROUP_AUTHORIZATION_FAILED,
    NOT_COORDINATOR,
    OFFSET_FETCH,
    MockCluster,
)

# `kpi-stream worker` with Faust's part replaced by a line saying it was reached: the start path is the CLI's own.
_START_UNTIL_FAUST = """
import sys

import stream.app


def _faust_starts(settings, counts):
    print(f"faust starts with {len(counts)} topics", flush=True)
    raise SystemExit(0)


stream.app.build_app = _faust_starts
from stream.cli import main

sys.exit(main(["worker"]))
"""


def _start(cluster: MockCluster, app_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, "KPI_APP_ID": app_id,
           "KPI_PARTITIONS": "2"}
    for topic in topic_plan(Settings.from_env(env)):
        cluster.create_topic(topic, 2)
    # A hang is a failure too: the check's own deadline is 15 s.
    return subprocess.run([sys.executable, "-c", _START_UNTIL_FAUST], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("answer", [COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR])
def test_the_worker_starts_through_a_moving_coordinator(answer: int) -> None:
    with MockCluster(brokers=3) as cluster:
        cluster.push_errors(OFFSET_FETCH, [answer] * 3)
        cluster.push_errors(FIND_COORDINATOR, [answer] * 2)
        started = _start(cluster, f"moving-{answer}")
        requests = cluster.requests()
    assert started.returncode == 0, f"exit {started.returncode}\n{started.stdout}{started.stderr}"
    assert "faust starts with" in started.stdout, started.stdout + started.stderr
    # Every error pushed was answered to a request, and one more request was answered after them.
    assert requests[OFFSET_FETCH] >= 4, requests
    assert requests[FIND_COORDINATOR] >= 3, requests


@pytest.mark.parametrize("refused", [FIND_COORDINATOR, OFFSET_FETCH])
def test_a_login_without_the_group_acl_is_refused_with_the_clear_message(refused: int) -> None:
    with MockCluster() as cluster:
        # Kafka refuses the coordinator lookup of a group the login has no ACL on, and its offsets too.
        cluster.push_errors(refused, [GROUP_AUTHORIZATION_FAILED] * 50)
        started = _start(cluster, "refused-app")
        requests = cluster.requests()
    assert started.returncode == 1, f"exit {started.returncode}\n{started.stdout}{started.stderr}"
    assert requests[refused] >= 1, requests
    last = started.stderr.strip().splitlines()[-1]
    assert last == ("kpi-stream: this PLAINTEXT client may not use the consumer group refused-app: it needs the "
                    "READ ACL on that group (`kpi-stream acls` lists them all)"), started.stderr
    assert "faust starts" not in started.stdout
