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
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from stream.broker import free_port, stop_process, tansu_binary
from tests.eventset import mixed
from tests.integration.harness import Names, Worker, produce, start_worker
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


async def _pipe_both(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                     broker_reader: asyncio.StreamReader, broker_writer: asyncio.StreamWriter) -> None:
    """Copy bytes both ways until either side closes."""

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


@contextmanager
def _broker_behind(tmp_path: Path, proxy: Callable[[int, int], Any], config: Callable[[int], dict[str, str]],
                   ) -> Iterator[tuple[dict[str, str], Any]]:
    """The embedded broker on a hidden port, advertising the port of the proxy in front of it.

    ``proxy(outer, inner)`` starts the proxy; ``config(outer)`` is a client config that gets through it.
    Yields (that config, the proxy) once a client with it is answered.
    """
    inner, outer = free_port(), free_port()
    with (tmp_path / "tansu.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - the broker binary with our own arguments
            [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{inner}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{outer}", "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    front = proxy(outer, inner)
    client = config(outer)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                AdminClient({**client, "log_level": 0}).list_topics(timeout=1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, "the broker behind the proxy did not answer"
        yield client, front
    finally:
        front.stop()
        stop_process(process, timeout_s=5)


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
        await _pipe_both(client_reader, client_writer, broker_reader, broker_writer)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, TlsProxy]]:
    """(client config, CA file, proxy) of a broker reachable only over TLS."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key, ca = make_certificates(certs)
    with _broker_behind(tmp_path, lambda outer, inner: TlsProxy(outer, inner, cert, key),
                        lambda outer: {"bootstrap.servers": f"127.0.0.1:{outer}", "security.protocol": "SSL",
                                       "ssl.ca.location": str(ca)}) as (config, proxy):
        yield config, ca, proxy


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


# ------------------------------------------------------------------ SASL

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE = 33, 58, 34


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _skip_tags(data: bytes, at: int) -> int:
    count, at = _uvarint(data, at)
    for _ in range(count):
        _, at = _uvarint(data, at)
        size, at = _uvarint(data, at)
        at += size
    return at


class SaslProxy:
    """A broker front that checks SASL/PLAIN credentials, as a broker with SASL users does, then pipes the
    authenticated connection to ``target`` unchanged (the embedded broker has no SASL users of its own).

    Before authentication it answers SaslHandshake (v0, v1) and SaslAuthenticate (v0 to v2) itself, passes
    ApiVersions through, and closes the connection on anything else, or on wrong credentials after saying so.
    """

    def __init__(self, port: int, target: int, users: dict[str, str]) -> None:
        self.port, self.target, self.users = port, target, users
        self.loop = asyncio.new_event_loop()
        self.authenticated: list[str] = []
        self.refused: list[str] = []
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(5), "the SASL proxy did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        started.set()
        self.loop.run_forever()
        server.close()

    def _check(self, token: bytes) -> str | None:
        """The user name of a correct PLAIN token (authzid NUL user NUL password), else None."""
        parts = token.split(b"\x00")
        if len(parts) != 3:
            return None
        user, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
        return user if self.users.get(user) == password else None

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.target)
        try:
            if not await self._authenticate(client_reader, client_writer, broker_reader, broker_writer):
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            client_writer.close()
            broker_writer.close()
            return

        await _pipe_both(client_reader, client_writer, broker_reader, broker_writer)

    async def _authenticate(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                            broker_reader: asyncio.StreamReader, broker_writer: asyncio.StreamWriter) -> bool:
        """Run the SASL exchange; True once the client is authenticated (False: the connection is closed)."""

        def reply(correlation: int, body: bytes, flexible: bool = False) -> None:
            header = struct.pack(">i", correlation) + (b"\x00" if flexible else b"")
            client_writer.write(struct.pack(">i", len(header) + len(body)) + header + body)

        def close() -> bool:
            client_writer.close()
            broker_writer.close()
            return False

        while True:
            size = struct.unpack(">i", await client_reader.readexactly(4))[0]
            request = await client_reader.readexactly(size)
            api_key, version, correlation, client_id_size = struct.unpack(">hhih", request[:10])
            at = 10 + max(client_id_size, 0)
            if api_key == API_VERSIONS:
                broker_writer.write(struct.pack(">i", size) + request)
                answer_size = await broker_reader.readexactly(4)
                client_writer.write(answer_size + await broker_reader.readexactly(struct.unpack(">i", answer_size)[0]))
            elif api_key == SASL_HANDSHAKE:
                mechanism_size = struct.unpack(">h", request[at:at + 2])[0]
                mechanism = request[at + 2:at + 2 + mechanism_size]
                error = 0 if mechanism == b"PLAIN" else UNSUPPORTED_SASL_MECHANISM
                reply(correlation, struct.pack(">hih", error, 1, 5) + b"PLAIN")
                await client_writer.drain()
                if error:
                    return close()
                if version == 0:  # the token follows as a bare frame, not in a SaslAuthenticate request
                    token_size = struct.unpack(">i", await client_reader.readexactly(4))[0]
                    user = self._check(await client_reader.readexactly(token_size))
                    if user is None:
                        self.refused.append("?")
                        return close()
                    client_writer.write(struct.pack(">i", 0))
                    await client_writer.drain()
                    self.authenticated.append(user)
                    return True
            elif api_key == SASL_AUTHENTICATE:
                flexible = version >= 2
                if flexible:
                    at = _skip_tags(request, at)
                    token_size, at = _uvarint(request, at)
                    token = request[at:at + token_size - 1]
                else:
                    token_size = struct.unpack(">i", request[at:at + 4])[0]
                    token = request[at + 4:at + 4 + token_size]
                user = self._check(token)
                error = 0 if user is not None else SASL_AUTHENTICATION_FAILED
                message = b"" if user is not None else b"Authentication failed: invalid username or password"
                if flexible:
                    body = struct.pack(">h", error) + (bytes([len(message) + 1]) + message if message else b"\x00")
                    body += b"\x01" + struct.pack(">q", 0) + b"\x00"  # no auth bytes, no session lifetime, no tags
                else:
                    body = struct.pack(">h", error) + (struct.pack(">h", len(message)) + message if message
                                                       else struct.pack(">h", -1)) + struct.pack(">i", 0)
                    if version >= 1:
                        body += struct.pack(">q", 0)
                reply(correlation, body, flexible)
                await client_writer.drain()
                if user is None:
                    self.refused.append(token.split(b"\x00")[1].decode(errors="replace") if b"\x00" in token else "?")
                    return close()
                self.authenticated.append(user)
                return True
            else:
                reply(correlation, struct.pack(">h", ILLEGAL_SASL_STATE))
                return close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def sasl_broker(tmp_path: Path) -> Iterator[tuple[dict[str, str], SaslProxy]]:
    """(client config, proxy) of a broker reachable only with the SASL/PLAIN user ``kpi``."""
    with _broker_behind(tmp_path, lambda outer, inner: SaslProxy(outer, inner, {"kpi": PASSWORD}),
                        lambda outer: {"bootstrap.servers": f"127.0.0.1:{outer}", "security.protocol": "SASL_PLAINTEXT",
                                       "sasl.mechanism": "PLAIN", "sasl.username": "kpi", "sasl.password": PASSWORD},
                        ) as (config, proxy):
        yield config, proxy


def test_worker_with_sasl_plain_gives_exact_kpis_and_a_wrong_password_is_refused(
        names: Names, tmp_path: Path, sasl_broker: tuple[dict[str, str], SaslProxy]) -> None:
    config, proxy = sasl_broker
    bootstrap = config["bootstrap.servers"]
    # Without credentials, or with a wrong password, a client gets nothing.
    for refused in ({"bootstrap.servers": bootstrap}, {**config, "sasl.password": "wrong"}):
        with pytest.raises(Exception):  # noqa: B017, PT011 - librdkafka raises KafkaException on the timeout
            AdminClient({**refused, "log_level": 0}).list_topics(timeout=2)
    assert "kpi" in proxy.refused
    messages, expected = mixed(seed=37)
    before = len(proxy.authenticated)
    worker = start_worker(names, bootstrap, tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                          KAFKA_SASL_MECHANISM="PLAIN", KAFKA_SASL_USERNAME="kpi", KAFKA_SASL_PASSWORD=PASSWORD,
                          KPI_LOG_LEVEL="debug")
    try:
        sent_beats = beats(names)
        sent = produce(config, as_input(names, messages, seed=9)) + produce(config, sent_beats)
        wait_for_finals(worker, sent)
        assert worker.total("leadgen_events_rejected_total") == expected["rejected"]
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    # The worker's consumers, producer and admin client all authenticated (several connections).
    assert len(proxy.authenticated) - before >= 3, proxy.authenticated
    assert_final_kpis_exact(config, names, messages, sent_beats)
    log = worker.log_path.read_text(errors="replace")
    assert '"security_protocol":"SASL_PLAINTEXT"' in log and PASSWORD not in log
    # With a wrong password the worker does not run on unauthenticated: it fails, and says why.
    wrong = Worker(names.env(bootstrap, free_port(), KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                             KAFKA_SASL_USERNAME="kpi", KAFKA_SASL_PASSWORD="not-the-password"),
                   tmp_path / "wrong.log")
    try:
        code = wrong.process.wait(timeout=60)
    finally:
        wrong.stop()
    assert code == 1
    text = wrong.log_path.read_text(errors="replace")
    last = text.strip().splitlines()[-1]
    assert last.startswith("kpi-stream: cannot reach Kafka") and "Authentication failed" in last, text[-3000:]
    assert "not-the-password" not in text
