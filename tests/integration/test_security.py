"""The worker on an Apache Kafka that checks everything: TLS, SASL users, and an authorizer with no ACL, no access.

(Tansu has no TLS of its own, no SASL users and no ACLs: before these tests the worker's TLS and SASL/PLAIN were
tested through proxies in front of it.)

The broker listens with SASL_SSL (a certificate made by the test for 127.0.0.1, signed by a CA made by the test;
SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN) for clients, and in plaintext on a second listener that only the test's
administration uses (its principal, ANONYMOUS, is the super user, as the broker's controller is). SCRAM users are
created by Kafka's own storage tool when the broker is formatted. These tests always run on Apache Kafka, whatever
broker the session uses: they are about what only a real broker does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from stream.brokers.apache_kafka import ApacheKafka, Listener
from stream.brokers.embedded import free_port
from stream.kafka.acls import Acl, worker_acls
from stream.settings import Settings
from tests.eventset import mixed
from tests.integration.harness import INPUTS, Names, create_topics, produce, read_topic, run_to_exit, start_worker
from tests.integration.outcome import as_input, assert_final_kpis_exact, beats, wait_for_finals

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "s3cret-sasl-password-value"
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
# Each mechanism's worker user, and the producer of the generator; PLAIN users are declared in the listener's JAAS.
USERS = {"SCRAM-SHA-512": "kpi512", "SCRAM-SHA-256": "kpi256", "PLAIN": "kpiplain"}
PRODUCER = "producer"


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


@dataclass
class SecureKafka:
    """The broker, its CA file, and the admin's (plaintext, super user) client config."""

    broker: ApacheKafka
    ca: Path

    @property
    def admin(self) -> dict[str, str]:
        return self.broker.client_config()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def env(self, user: str, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
        """The worker's settings for the same login."""
        return {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CA_FILE": str(self.ca),
                "KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": password}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    directory = tmp_path_factory.mktemp("secure-kafka")
    cert, key, ca = make_certificates(directory)
    keystore = directory / "keystore.pem"  # Kafka's PEM key store: the certificate, then its (PKCS#8) key
    keystore.write_text(cert.read_text() + key.read_text())
    plain_users = f'user_{USERS["PLAIN"]}="{PASSWORD}"'
    properties = {
        "inter.broker.listener.name": "INTERNAL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        "listener.name.secure.scram-sha-512.sasl.jaas.config": SCRAM_JAAS,
        "listener.name.secure.scram-sha-256.sasl.jaas.config": SCRAM_JAAS,
        "listener.name.secure.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:ANONYMOUS",
    }
    scram = [("SCRAM-SHA-512", USERS["SCRAM-SHA-512"], PASSWORD), ("SCRAM-SHA-256", USERS["SCRAM-SHA-256"], PASSWORD),
             ("SCRAM-SHA-256", PRODUCER, PASSWORD)]
    broker = ApacheKafka(log_path=directory / "kafka.log", properties=properties, scram_users=scram,
                         listeners=[Listener("SECURE", "SASL_SSL"), Listener("INTERNAL", "PLAINTEXT")])
    broker.start()
    try:
        yield SecureKafka(broker, ca)
    finally:
        broker.stop()


def _binding(acl: Acl, principal: str) -> AclBinding:
    pattern = ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL
    return AclBinding(ResourceType[acl.resource_type], acl.name, pattern, principal, "*",
                      AclOperation[acl.operation], AclPermissionType.ALLOW)


def grant(kafka: SecureKafka, acls: list[Acl], principal: str) -> None:
    admin = AdminClient(kafka.admin)
    for future in admin.create_acls([_binding(acl, principal) for acl in acls], request_timeout=15).values():
        future.result()
    # ACLs reach the authorizer through the metadata log: wait until the broker lists them all.
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    wanted = {_binding(acl, principal) for acl in acls}
    deadline = time.monotonic() + 10
    while not wanted <= set(admin.describe_acls(everything, request_timeout=10).result()):
        assert time.monotonic() < deadline, "the broker did not list the ACLs granted"
        time.sleep(0.1)


def settings_of(names: Names, kafka: SecureKafka, env: dict[str, str]) -> Settings:
    return Settings.from_env({**names.env(kafka.bootstrap, 0), **env})


def kpi_stream(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_worker_over_sasl_ssl_with_exactly_its_acls_gives_exact_kpis(
        mechanism: str, secure_kafka: SecureKafka, names: Names, tmp_path: Path) -> None:
    """The worker, `topics` and `generate` over SASL_SSL; the worker's user has only `kpi-stream acls`'s ACLs."""
    user = USERS[mechanism]
    login = secure_kafka.env(user, mechanism)
    env = {**names.env(secure_kafka.bootstrap, free_port()), **login}
    create_topics(secure_kafka.admin, [names.topic(topic) for topic in INPUTS])  # the producers' topics exist
    grant(secure_kafka, worker_acls(settings_of(names, secure_kafka, login)), f"User:{user}")
    printed = kpi_stream("acls", env=env)
    assert printed.returncode == 0 and printed.stdout.count(f"--allow-principal User:{user} ") == len(
        worker_acls(settings_of(names, secure_kafka, login))), printed.stdout + printed.stderr

    # `kpi-stream topics` as the worker's user creates the outputs and lists every topic.
    topics = kpi_stream("topics", env=env)
    assert topics.returncode == 0, topics.stderr
    assert f"{names.topic('kpi-cost-per-lead')}: 4 partitions" in topics.stdout, topics.stdout

    # `kpi-stream generate` as a producer allowed to write the inputs of its own names.
    traffic = Names()
    create_topics(secure_kafka.admin, [traffic.topic(topic) for topic in INPUTS])
    grant(secure_kafka, [Acl("TOPIC", traffic.topic(topic), "WRITE") for topic in INPUTS], f"User:{PRODUCER}")
    producer = secure_kafka.env(PRODUCER, "SCRAM-SHA-256")
    generated = kpi_stream("generate", "--rate", "0", "--events", "300", "--seed", "2",
                           env={**traffic.env(secure_kafka.bootstrap, 0), **producer})
    assert generated.returncode == 0 and "sent 300 events in total" in generated.stderr, generated.stderr
    received = sum(len(read_topic(secure_kafka.admin, traffic.topic(topic), idle_s=1)) for topic in INPUTS)
    assert received == 300

    # A plaintext client gets nothing from the SASL_SSL port.
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": secure_kafka.bootstrap, "log_level": 0}).list_topics(timeout=3)

    messages, expected = mixed(seed=41)
    sent_beats = beats(names)
    sent = produce(secure_kafka.admin, as_input(names, messages, seed=11)) + produce(secure_kafka.admin, sent_beats)
    worker = start_worker(names, secure_kafka.bootstrap, tmp_path, KPI_LOG_LEVEL="debug", KPI_WEB_HOST="127.0.0.2",
                          **login)
    try:
        # /metrics answers on the configured address only (all of 127.0.0.0/8 reaches this host).
        assert worker.total("leadgen_worker_ready") == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", worker.port), timeout=5).close()
        wait_for_finals(worker, sent)
        assert worker.total("leadgen_events_rejected_total") == expected["rejected"]
        assert not worker.errors(), worker.errors()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert_final_kpis_exact(secure_kafka.admin, names, messages, sent_beats)
    log = worker.log_path.read_text(errors="replace")
    assert '"security_protocol":"SASL_SSL"' in log and '"sasl_password":"***"' in log
    assert PASSWORD not in log
    shown = kpi_stream("settings", env=env)
    assert '"***"' in shown.stdout and PASSWORD not in shown.stdout + shown.stderr


def test_a_wrong_password_ends_the_worker_fast_naming_the_refused_login(
        secure_kafka: SecureKafka, names: Names, tmp_path: Path) -> None:
    login = secure_kafka.env(USERS["SCRAM-SHA-512"], "SCRAM-SHA-512", "not-the-password")
    code, took, text = run_to_exit(names.env(secure_kafka.bootstrap, free_port(), **login), tmp_path / "wrong.log")
    last = text.strip().splitlines()[-1]
    assert code == 1, text[-3000:]
    assert last.startswith("kpi-stream: cannot reach Kafka") and "Authentication failed" in last, text[-3000:]
    assert USERS["SCRAM-SHA-512"] in last, last  # the refused login is named
    assert "not-the-password" not in text
    assert took < 15, took
    print(f"\nwrong password: worker exited {code} {took:.1f} s after start: {last}")


def _lacking(settings: Settings) -> dict[str, Acl]:
    """One ACL of each kind the worker needs, by a name for the test's id."""
    acls = worker_acls(settings)

    def find(resource_type: str, operation: str, name: str | None = None, prefixed: bool = False) -> Acl:
        return next(acl for acl in acls if (acl.resource_type, acl.operation, acl.prefixed) ==
                    (resource_type, operation, prefixed) and (name is None or acl.name == name))

    return {"input-read": find("TOPIC", "READ", next(iter(sorted(settings.input_topics.values())))),
            "kpi-write": find("TOPIC", "WRITE", settings.kpi_topic("cost-per-lead")),
            "group-read": find("GROUP", "READ"),
            "internal-write": find("TOPIC", "WRITE", prefixed=True),
            "internal-create": find("TOPIC", "CREATE", prefixed=True)}


@pytest.mark.parametrize("lacking", ["input-read", "kpi-write", "group-read", "internal-write", "internal-create"])
def test_a_worker_lacking_one_acl_fails_naming_what_it_lacked(
        lacking: str, secure_kafka: SecureKafka, names: Names, tmp_path: Path) -> None:
    login = secure_kafka.env(USERS["SCRAM-SHA-512"], "SCRAM-SHA-512")
    settings = settings_of(names, secure_kafka, login)
    taken = _lacking(settings)[lacking]
    create_topics(secure_kafka.admin, [names.topic(topic) for topic in INPUTS])
    grant(secure_kafka, [acl for acl in worker_acls(settings) if acl != taken], f"User:{USERS['SCRAM-SHA-512']}")
    messages, _ = mixed(seed=43)
    produce(secure_kafka.admin, as_input(names, messages, seed=12))
    code, took, text = run_to_exit(names.env(secure_kafka.bootstrap, free_port(), **login), tmp_path / "worker.log")
    last = text.strip().splitlines()[-1]
    print(f"\nlacking {taken.operation} on {taken.resource_type} {taken.name}: exit {code} after {took:.1f} s: {last}")
    assert code in (1, 70), text[-3000:]  # refused at start, or the first batch that needed it
    assert taken.name in last and ("acls" in last), last  # names the resource, and where the list of ACLs is
    assert took < 30, took
