"""The worker over TLS, with SASL settings passed through and never shown.

The embedded broker's own TLS does not work in the version shipped (``--cert`` and ``--key`` are rejected
together, and either alone serves plaintext), so the broker listens in plaintext behind a TLS-terminating
proxy that it advertises as its address: every client connection crosses TLS, verified against a CA made
for the test.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from stream.broker import free_port, stop_process, tansu_binary
from tests.eventset import mixed
from tests.integration.harness import Names, produce, start_worker
from tests.integration.outcome import as_input, assert_final_kpis_exact, beats, wait_for_finals

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "s3cret-sasl-password-value"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (cert, key, CA cert)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=kpi-test-ca", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "1", "-extfile", "san.ext", cwd=directory)
    return directory / "server.pem", directory / "server.key", directory / "ca.pem"


class TlsProxy:
    """Accepts TLS on ``port`` and pipes each connection, in plaintext, to ``target``."""

    def __init__(self, port: int, target: int, cert: Path, key: Path) -> None:
        self.port, self.target = port, target
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(5), "the TLS proxy did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context))
        started.set()
        self.loop.run_forever()
        server.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, TlsProxy]]:
    """(client config, CA file, proxy) of a broker reachable only over TLS."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key, ca = make_certificates(certs)
    inner, outer = free_port(), free_port()
    with (tmp_path / "tansu.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - the broker binary with our own arguments
            [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{inner}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{outer}", "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = TlsProxy(outer, inner, cert, key)
    config = {"bootstrap.servers": f"127.0.0.1:{outer}", "security.protocol": "SSL", "ssl.ca.location": str(ca)}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                AdminClient({**config, "log_level": 0}).list_topics(timeout=1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, "the broker behind the TLS proxy did not answer"
        yield config, ca, proxy
    finally:
        proxy.stop()
        stop_process(process, timeout_s=5)


def test_worker_over_tls_gives_exact_kpis_and_never_shows_the_sasl_password(
        names: Names, tmp_path: Path, tls_broker: tuple[dict[str, str], Path, TlsProxy]) -> None:
    config, ca, proxy = tls_broker
    bootstrap = config["bootstrap.servers"]
    # A plaintext client gets nothing from the TLS port.
    with pytest.raises(Exception):  # noqa: B017, PT011 - librdkafka raises KafkaException on the timeout
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=3)
    messages, expected = mixed(seed=31)
    before = proxy.connections
    worker = start_worker(names, bootstrap, tmp_path, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_FILE=str(ca),
                          KAFKA_SASL_USERNAME="kpi", KAFKA_SASL_PASSWORD=PASSWORD, KPI_LOG_LEVEL="debug",
                          KPI_WEB_HOST="127.0.0.2")
    try:
        # /metrics answers on the configured address only (all of 127.0.0.0/8 reaches this host).
        assert worker.total("leadgen_worker_ready") == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", worker.port), timeout=5).close()
        sent_beats = beats(names)
        sent = produce(config, as_input(names, messages, seed=8)) + produce(config, sent_beats)
        wait_for_finals(worker, sent)
        assert worker.total("leadgen_events_rejected_total") == expected["rejected"]
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert proxy.connections > before  # the worker's own connections went through TLS
    assert_final_kpis_exact(config, names, messages, sent_beats)
    log = worker.log_path.read_text(errors="replace")
    assert '"security_protocol":"SSL"' in log and '"sasl_password":"***"' in log
    assert PASSWORD not in log
    shown = subprocess.run([sys.executable, "-m", "stream", "settings"], capture_output=True, text=True, check=True,
                           env={**os.environ, "KAFKA_SASL_PASSWORD": PASSWORD})
    assert '"***"' in shown.stdout and PASSWORD not in shown.stdout + shown.stderr
