"""A real Apache Kafka broker on this machine: the pinned release fetched from Maven Central, run as one KRaft node.

`./dev kafka` and the integration tests use it; `kpi-stream demo` never does (it needs nothing but Python).
The release's jars are fetched once with Maven into a cache folder (``KPI_KAFKA_CACHE``, default
``.cache/kafka`` in the checkout) and run with the machine's Java (17 or newer). Each broker is a combined
broker and controller with its data in a temporary folder, removed when it stops.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream.brokers.embedded import BrokerError, LocalBroker, free_port

# The newest 4.x release that resolved from Maven Central with its dependencies (checked 2026-12-02).
KAFKA_VERSION = "4.4.0"
# Kafka's own distribution logs through Log4j 2 behind SLF4J 1.7 (the slf4j-api its jars depend on).
LOG4J_VERSION = "2.24.3"
# How long a broker may take from start to answering with itself in the metadata (measured: 5-8 s on 2 cores).
READY_TIMEOUT_S = 30.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>leadgen-kpi-stream</groupId>
  <artifactId>apache-kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# One line per request at INFO from the request logger and the state change logs is noise in a test's log.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""

# Settings of a single-node broker: internal topics with one replica, and no wait before the first rebalance
# of a new group (the default 3 s delays every test's first join). Everything else is Kafka's default.
SINGLE_NODE = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
}


def cache_dir() -> Path:
    """Where the fetched jars live: ``KPI_KAFKA_CACHE``, else ``.cache/kafka`` in the checkout this runs from."""
    configured = os.environ.get("KPI_KAFKA_CACHE")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".cache" / "kafka"
    return Path.home() / ".cache" / "leadgen-kpi-stream" / "kafka"


def libs_dir() -> Path:
    """The folder of the pinned release's jars (what the distribution's ``libs/`` holds)."""
    return cache_dir() / KAFKA_VERSION / "libs"


def fetch(progress: bool = True) -> Path:
    """Fetch the pinned Kafka release's jars with Maven, once; returns their folder.

    Raises:
        BrokerError: Java or Maven is missing, or Maven could not resolve the release.
    """
    libs = libs_dir()
    done = libs / ".complete"
    if done.exists():
        return libs
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerError(f"Apache Kafka needs `{tool}` on the PATH (Java 17+ and Maven 3.8+)")
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    if libs.exists():
        shutil.rmtree(libs)  # a fetch that did not finish
    if progress:
        print(f"fetching Apache Kafka {KAFKA_VERSION} with Maven into {libs} (once) ...", flush=True)
    command = ["mvn", "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed tool
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise BrokerError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION}:\n{tail}")
    if not list(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(f"Maven finished but {libs} has no kafka_2.13-{KAFKA_VERSION}.jar")
    done.write_text(KAFKA_VERSION + "\n")
    return libs


def cluster_id() -> str:
    """A new KRaft cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class Listener:
    """One client listener of the broker: its name, security protocol and port."""

    name: str
    protocol: str = "PLAINTEXT"
    port: int = field(default_factory=free_port)


class ApacheKafka(LocalBroker):
    """A single-node KRaft Apache Kafka on 127.0.0.1, started and stopped with this object.

    Args:
        log_path: the broker's own log (stdout and stderr of the JVM).
        port: the PLAINTEXT client port (default: a free one); ignored when ``listeners`` is given.
        listeners: client listeners; the first is the one ``bootstrap_servers`` names.
        properties: more ``server.properties`` lines (TLS, SASL, authorizer, log cleaner, ...).
        scram_users: ``(mechanism, user, password)`` SCRAM credentials written by Kafka's storage tool at format.
        heap: the JVM's maximum heap.
    """

    name = f"Apache Kafka {KAFKA_VERSION}"
    worker_env: dict[str, str] = {}  # a worker runs on Apache Kafka with its defaults
    stop_timeout_s = 20.0  # a controlled shutdown of a combined node takes 1-5 s; past 20 s something is stuck

    def __init__(self, log_path: Path, port: int | None = None, listeners: Iterable[Listener] | None = None,
                 properties: Mapping[str, str] | None = None,
                 scram_users: Iterable[tuple[str, str, str]] = (), heap: str = "768m") -> None:
        self.listeners = list(listeners) if listeners else [Listener("PLAINTEXT", "PLAINTEXT", port or free_port())]
        self.controller_port = free_port()
        self.log_path = log_path
        self.properties = dict(properties or {})
        self.scram_users = list(scram_users)
        self.heap = heap
        self.data_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The port of the first client listener."""
        return self.listeners[0].port

    @property
    def bootstrap_servers(self) -> str:
        """The address clients of the first listener connect to."""
        return f"127.0.0.1:{self.port}"

    def server_properties(self, data_dir: Path) -> dict[str, str]:
        """The broker's whole configuration."""
        names = [listener.name for listener in self.listeners]
        protocols = {listener.name: listener.protocol for listener in self.listeners}
        protocols["CONTROLLER"] = "PLAINTEXT"
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join([*(f"{listener.name}://127.0.0.1:{listener.port}" for listener in self.listeners),
                                   f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners": ",".join(f"{listener.name}://127.0.0.1:{listener.port}"
                                             for listener in self.listeners),
            "listener.security.protocol.map": ",".join(f"{name}:{proto}" for name, proto in protocols.items()),
            "inter.broker.listener.name": names[0],
            "log.dirs": str(data_dir / "log"),
            **SINGLE_NODE,
            **self.properties,
        }
        return config

    def _java(self, libs: Path, main: str, *args: str, heap: str = "256m") -> list[str]:
        return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self._data('log4j2.properties')}",
                "-cp", f"{libs}/*", main, *args]

    def _data(self, name: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir / name

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Format a fresh data folder, start the broker and wait until it lists itself in the metadata.

        Raises:
            BrokerError: when it cannot be fetched, exits, or does not answer in time.
        """
        libs = fetch()
        self.data_dir = Path(tempfile.mkdtemp(prefix="kpi-kafka-"))
        config = self.server_properties(self.data_dir)
        self._data("server.properties").write_text("".join(f"{key}={value}\n" for key, value in config.items()))
        self._data("log4j2.properties").write_text(_LOG4J)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        format_args = ["format", "-t", cluster_id(), "-c", str(self._data("server.properties"))]
        for mechanism, user, password in self.scram_users:
            format_args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        with self.log_path.open("ab") as log_file:
            formatted = subprocess.run(self._java(libs, "kafka.tools.StorageTool", *format_args),  # noqa: S603
                                       stdout=log_file, stderr=subprocess.STDOUT, check=False)
            if formatted.returncode != 0:
                self._remove_data()
                raise BrokerError(f"Kafka's storage tool failed with code {formatted.returncode}; see {self.log_path}")
            # Its own session: Ctrl-C reaches `./dev kafka`, which then stops the broker and removes its data.
            self._process = subprocess.Popen(  # noqa: S603 - java with our own arguments
                self._java(libs, "kafka.Kafka", str(self._data("server.properties")), heap=self.heap),
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_answering(self.client_config(), timeout_s)

    def client_config(self) -> dict[str, str]:
        """librdkafka settings of the first PLAINTEXT listener (the readiness check's, and an admin's when the
        client listener is secured).

        Raises:
            BrokerError: the broker has no PLAINTEXT listener.
        """
        for listener in self.listeners:
            if listener.protocol == "PLAINTEXT":
                return {"bootstrap.servers": f"127.0.0.1:{listener.port}"}
        raise BrokerError("the broker needs a PLAINTEXT listener (its readiness is checked on one)")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 20 s), reap it and remove its data."""
        super().stop()
        self._remove_data()

    def _remove_data(self) -> None:
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
