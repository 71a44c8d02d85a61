"""The broker of the integration and ops tests: Apache Kafka (the default) or the embedded Tansu.

``--broker kafka|tansu`` or ``KPI_TEST_BROKER`` chooses it. One broker serves the whole session, each test
with its own topics and app id; a test that must own a broker (a stall, a broker going away, security
listeners) starts one of the same kind with :func:`new_broker`. When a test fails, the part of the session
broker's log written during it is kept as ``broker.log`` in the test's temporary folder and shown in the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from stream.brokers.apache_kafka import ApacheKafka
from stream.brokers.embedded import EmbeddedBroker

BROKERS = ("kafka", "tansu")


class RunningBroker(Protocol):
    """What the tests use of either broker."""

    log_path: Path
    worker_env: dict[str, str]  # the settings a worker needs on this broker

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def send_signal(self, sig: int) -> None: ...

    def __enter__(self) -> RunningBroker: ...

    def __exit__(self, *exc_info: object) -> None: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker", choices=BROKERS, default=os.environ.get("KPI_TEST_BROKER", "kafka"),
                     help="the broker of the integration tests: kafka (Apache Kafka, fetched with Maven; the "
                          "default) or tansu (the embedded broker); also KPI_TEST_BROKER")


def make_broker(kind: str, log_dir: Path) -> RunningBroker:
    """A broker of ``kind``, not started, logging into ``log_dir``."""
    if kind == "kafka":
        return ApacheKafka(log_path=log_dir / "kafka.log")
    return EmbeddedBroker(log_path=log_dir / "tansu.log")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.config.getoption("--broker")
    if kind not in BROKERS:
        raise pytest.UsageError(f"KPI_TEST_BROKER must be one of {', '.join(BROKERS)}, not {kind!r}")
    return kind


@pytest.fixture(scope="session")
def session_broker(broker_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """The session's broker; every worker the tests start gets its settings (the environment is inherited)."""
    with make_broker(broker_kind, tmp_path_factory.mktemp("broker")) as broker, pytest.MonkeyPatch.context() as patch:
        for name, value in broker.worker_env.items():
            patch.setenv(name, value)
        yield broker


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """The embedded broker, for the tests that run on it whatever the session's broker is."""
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
        yield broker


@pytest.fixture
def bootstrap(session_broker: RunningBroker, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The session broker's address; its log of the test is kept when the test fails."""
    start = session_broker.log_path.stat().st_size if session_broker.log_path.exists() else 0
    yield session_broker.bootstrap_servers
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        with session_broker.log_path.open("rb") as log:
            log.seek(start)
            (tmp_path / "broker.log").write_bytes(log.read())


@pytest.fixture
def new_broker(broker_kind: str) -> Iterator[Callable[[Path], RunningBroker]]:
    """Start a broker of the session's kind for one test (its log in the given folder); stopped after it."""
    started: list[RunningBroker] = []

    def start(log_dir: Path) -> RunningBroker:
        broker = make_broker(broker_kind, log_dir)
        broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.report_call = report  # type: ignore[attr-defined]
        broker = item.funcargs.get("session_broker") if hasattr(item, "funcargs") else None
        if report.failed and broker is not None and broker.log_path.exists():
            tail = broker.log_path.read_text(errors="replace").splitlines()[-40:]
            report.sections.append(("broker log (last 40 lines)", "\n".join(tail)))
    return report


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test asking for ``each_broker`` runs on the session's broker and, when that is Kafka, on Tansu too."""
    if "each_broker" in metafunc.fixturenames:
        kinds = ["kafka", "tansu"] if metafunc.config.getoption("--broker") == "kafka" else ["tansu"]
        metafunc.parametrize("each_broker", kinds, indirect=True)


@pytest.fixture
def each_broker(request: pytest.FixtureRequest) -> RunningBroker:
    """The session's broker, or the embedded one (see :func:`pytest_generate_tests`)."""
    fixture = "session_broker" if request.param == request.config.getoption("--broker") else "tansu"
    broker: RunningBroker = request.getfixturevalue(fixture)
    return broker
