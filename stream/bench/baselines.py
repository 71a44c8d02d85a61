"""The two baselines the pipeline is compared with: (a) a raw aiokafka consumer, (b) the Faust floor."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from stream.bench.errors import BenchError
from stream.bench.processes import ManagedProcess
from stream.bench.progress import Progress
from stream.bench.results import Rate, RawResult
from stream.bench.timing import POLL_S, STALL_TIMEOUT_S, STARTUP_TIMEOUT_S
from stream.bench.watch import Timeline
from stream.settings import Settings


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The connection's security options in the form aiokafka takes."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
        if settings.ssl_cert_file:
            context.load_cert_chain(settings.ssl_cert_file, settings.ssl_key_file or None)
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                       sasl_plain_password=settings.sasl_password)
    return options


def decode_all(values: list[bytes | None]) -> int:
    """Decode every value with orjson; returns how many could not be decoded."""
    failed = 0
    for value in values:
        try:
            orjson.loads(value)  # type: ignore[arg-type]
        except (orjson.JSONDecodeError, TypeError):
            failed += 1
    return failed


async def consume_raw(settings: Settings, group_id: str, expected: int, progress: Progress) -> RawResult:
    """Read every produced message with a bare aiokafka consumer that only decodes the values.

    Raises:
        BenchError: when it stops receiving messages before it has them all.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*settings.input_topics.values(), bootstrap_servers=settings.bootstrap_servers,
                                group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False,
                                **aiokafka_security(settings))
    joining = time.monotonic()
    await consumer.start()  # connects and joins the group (subscribed in the constructor)
    try:
        count = undecodable = 0
        first: float | None = None
        last = last_progress = time.monotonic()
        while count < expected:
            poll_started = time.monotonic()
            batches = await consumer.getmany(timeout_ms=int(POLL_S * 1000))
            for records in batches.values():
                undecodable += decode_all([record.value for record in records])
                count += len(records)
            now = time.monotonic()
            if batches:
                first = poll_started if first is None else first
                last = last_progress = now
            elif now - last_progress > (STALL_TIMEOUT_S if first else STARTUP_TIMEOUT_S):
                raise BenchError(f"the raw consumer got nothing for {now - last_progress:.0f} s "
                                 f"({count}/{expected} read)")
            progress.show(f"raw consumer: consumed {count}/{expected}")
    finally:
        await consumer.stop()
    progress.show(f"raw consumer: consumed {count} in {last - (first or last):.2f} s", force=True)
    return RawResult(Rate(count, last - (first or last)), Rate(count, last - joining), undecodable)


def measure_raw(settings: Settings, run_id: str, expected: int, progress: Progress) -> RawResult:
    """Measurement (a): the raw consumer (aiokafka's group chatter at INFO kept off the progress lines)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        return asyncio.run(consume_raw(settings, f"{run_id}-raw", expected, progress))
    finally:
        logger.setLevel(level)


def read_status(path: Path) -> dict[str, Any] | None:
    """The floor worker's last status, or None before it wrote one."""
    try:
        status: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return status


def measure_floor(env: Mapping[str, str], run_id: str, expected: int, work_dir: Path, mode: str,
                  progress: Progress) -> Rate:
    """Measurement (b): a bare Faust agent counting events, as a worker subprocess.

    Raises:
        BenchError: when the worker exits, does not start, or stalls.
    """
    status_path = work_dir / "floor-status.json"
    floor_env = {**env, "BENCH_FLOOR_APP_ID": f"{run_id}-floor", "BENCH_FLOOR_EXPECTED": str(expected),
                 "BENCH_FLOOR_STATUS": str(status_path), "BENCH_FLOOR_MODE": mode}
    argv = [sys.executable, "-m", "stream.tools.bench_floor", "worker", "-l", "info", "--without-web"]
    with ManagedProcess("Faust floor worker", argv, floor_env, work_dir / "floor.log", work_dir) as floor, \
            Timeline(work_dir / "floor-timeline.csv", "counted") as timeline:
        started = last_change = timeline.started
        count = 0
        while True:
            floor.check()
            status = read_status(status_path)
            now = time.monotonic()
            if status is not None and status["count"] != count:
                count, last_change = status["count"], now
                timeline.add(now, count)
            if status is not None and status["done"]:
                break
            if now - last_change > (STALL_TIMEOUT_S if count else STARTUP_TIMEOUT_S):
                raise BenchError(f"the Faust floor worker made no progress for {now - last_change:.0f} s "
                                 f"({count}/{expected} counted); see {floor.log_path}")
            progress.show(f"faust floor: counted {count}/{expected}")
            time.sleep(POLL_S)
    rate = Rate(status["count"], status["last"] - status["first"])
    progress.show(f"faust floor: counted {rate.events} in {rate.seconds:.2f} s "
                  f"(worker started in {now - started:.1f} s in all)", force=True)
    return rate
