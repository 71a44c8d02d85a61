"""The ``kpi-stream`` command: Faust's own command line (``worker``), plus demo, generate, topics, settings, bench,
kafka."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

import orjson

from stream.kafka import retried_logs
from stream.runtime import redact
from stream.settings import ENVIRONMENT, Settings, SettingsError, unknown_variables

OWN_COMMANDS = ("demo", "generate", "topics", "settings", "bench", "kafka", "acls")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Before the settings are read, so that a misspelt variable is named even when another one is refused.
    for warning in unknown_variables():
        print(f"kpi-stream: warning: {warning}", file=sys.stderr)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"kpi-stream: bad setting: {exc}", file=sys.stderr)
        return 2
    # Before any log record is made: the Kafka client logs its SASL request, password and all, at debug level.
    redact.install(settings.secrets())
    retried_logs.install()
    if args and args[0] in OWN_COMMANDS:
        return _own_command(args[0], args[1:], settings)
    return _faust(args, settings)


def _faust(args: list[str], settings: Settings) -> int:
    """Hand over to Faust's command line with the app built from the settings."""
    from stream.app import build_app
    from stream.core.targets import TargetsError
    from stream.kafka.clients import TopicError, prepare_cluster
    from stream.stages import targets_of

    if not settings.bootstrap_servers:
        print("kpi-stream: KAFKA_BOOTSTRAP_SERVERS is not set (or run `kpi-stream demo` for a local broker)",
              file=sys.stderr)
        return 2
    try:
        targets_of(settings)  # checked before anything starts: a wrong target file is the operator's to fix
    except TargetsError as exc:
        print(f"kpi-stream: {exc}", file=sys.stderr)
        return 2
    if args and args[0] == "worker":
        try:
            counts = prepare_cluster(settings)
        except TopicError as exc:
            print(f"kpi-stream: {exc}", file=sys.stderr)
            return 1
        if not any(arg.startswith(("-l", "--loglevel")) for arg in args):
            args += ["--loglevel", {"warning": "warn"}.get(settings.log_level, settings.log_level)]
    else:
        counts = {topic: settings.partitions for topic in settings.input_topics.values()}
    app = build_app(settings, counts)
    sys.argv = ["kpi-stream", *args]
    tune_garbage_collector()
    app.main()
    return 0


# Allocations of container objects between two collections of the youngest generation (Python's default: 700).
# The worker makes many short-lived objects per event and few reference cycles, and keeps a large heap of
# long-lived ones (deduplication ids, indexes, the open cells) that every older collection scans again: with the
# default, a lead-heavy replay of 200,000 events ran the collector about 7,000 times, 13 % of the worker's CPU;
# with 20,000 about 80 times, 2 % (docs/performance.md, "The cyclic garbage collector").
GC_YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Collect cycles less often, and never scan again what the imports and the app's construction made."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _own_command(command: str, args: list[str], settings: Settings) -> int:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if command == "settings":
        print(orjson.dumps(settings.describe(), option=orjson.OPT_INDENT_2).decode())
        return 0
    if command == "topics":
        from stream.kafka.clients import TopicError, ensure_topics

        try:
            for topic, partitions in sorted(ensure_topics(settings).items()):
                print(f"{topic}: {partitions} partitions")
        except TopicError as exc:
            print(f"kpi-stream: {exc}", file=sys.stderr)
            return 1
        return 0
    if command == "generate":
        return _generate(args, settings)
    if command == "kafka":
        return _kafka(args)
    if command == "acls":
        return _acls(args, settings)
    if command == "demo":
        from stream.tools.demo import run_demo

        return run_demo(args, settings)
    from stream.bench import run_bench

    status: int = run_bench(args, settings)
    return status


def _generate(args: list[str], settings: Settings) -> int:
    from stream.kafka.clients import producer_config
    from stream.kafka.produce import BatchProducer, produce_paced
    from stream.tools.generator import TrafficModel

    parser = argparse.ArgumentParser(prog="kpi-stream generate", description="Send synthetic traffic.")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (0: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--events", type=int, default=None, help="stop after this many events")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same events)")
    parser.add_argument("--backfill-hours", type=float, default=None,
                        help="instead of live event times, simulate history starting this many hours ago")
    options = parser.parse_args(args)
    if not settings.bootstrap_servers:
        print("kpi-stream: KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    now_ms = int(time.time() * 1000)
    if options.backfill_hours is not None:
        model = TrafficModel(seed=options.seed, start_ms=now_ms - int(options.backfill_hours * 3_600_000))
    else:
        model = TrafficModel(seed=options.seed, start_ms=now_ms, time_scale=20.0,
                             clock_ms=lambda: int(time.time() * 1000))
    producer = BatchProducer(producer_config(settings))
    sent = 0
    try:
        for sent in produce_paced(producer, settings.input_topics, model.events(options.events),
                                  options.rate or None, options.duration):
            if sent % 10000 == 0:
                print(f"sent {sent} events", file=sys.stderr)
    except KeyboardInterrupt:
        producer.flush()
    print(f"sent {sent} events in total", file=sys.stderr)
    return 0


def _acls(args: list[str], settings: Settings) -> int:
    from stream.kafka.acls import worker_acls

    parser = argparse.ArgumentParser(
        prog="kpi-stream acls",
        description="Print the ACLs the worker needs with these settings, as kafka-acls.sh arguments.")
    parser.add_argument("--principal", default=f"User:{settings.sasl_username}" if settings.sasl_username else None,
                        help="the worker's principal (default: User:KAFKA_SASL_USERNAME)")
    options = parser.parse_args(args)
    if not options.principal:
        print("kpi-stream: name the worker's principal: --principal User:NAME (or set KAFKA_SASL_USERNAME)",
              file=sys.stderr)
        return 2
    for acl in worker_acls(settings):
        print(f"{acl.describe(options.principal)}    # {acl.why}")
    return 0


def _kafka(args: list[str]) -> int:
    from stream.brokers.apache_kafka import KAFKA_VERSION, ApacheKafka, fetch, libs_dir
    from stream.brokers.embedded import BrokerError

    parser = argparse.ArgumentParser(
        prog="kpi-stream kafka",
        description=f"Run a single-node Apache Kafka {KAFKA_VERSION} (KRaft) on 127.0.0.1 in the foreground; "
                    "its data is removed on Ctrl-C.")
    parser.add_argument("port", nargs="?", type=int, default=None, help="client port (default: a free one)")
    parser.add_argument("--fetch-only", action="store_true", help="only fetch the release with Maven, once")
    parser.add_argument("--log", default=None, help="the broker's log file (default: in a temporary folder)")
    options = parser.parse_args(args)
    try:
        if options.fetch_only:
            fetch()
            print(f"Apache Kafka {KAFKA_VERSION} is in {libs_dir()}")
            return 0
        log = Path(options.log) if options.log else Path(tempfile.mkdtemp(prefix="kpi-kafka-log-")) / "kafka.log"
        broker = ApacheKafka(log_path=log, port=options.port)
        started = time.monotonic()
        broker.start()
    except BrokerError as exc:
        print(f"kpi-stream: {exc}", file=sys.stderr)
        return 1
    print(f"Apache Kafka {KAFKA_VERSION} ready in {time.monotonic() - started:.1f} s; log {log}", flush=True)
    print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
    signal.signal(signal.SIGTERM, _interrupted)  # stopped as by Ctrl-C, not left running in its own session
    try:
        while broker.running():
            time.sleep(0.5)
        print("kpi-stream: the broker exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the broker and removing its data ...", file=sys.stderr)
        return 0
    finally:
        broker.stop()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def settings_table() -> str:
    """The README's settings table, from the one place settings are defined."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var, default, meaning in ENVIRONMENT.values():
        lines.append(f"| `{var}` | `{default}` | {meaning} |" if default else f"| `{var}` | | {meaning} |")
    return "\n".join(lines)
