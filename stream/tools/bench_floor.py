"""The benchmark's Faust floor: a bare Faust agent that only counts the input events.

Run by ``kpi-stream bench`` as ``python -m stream.tools.bench_floor worker -l info --without-web``. It reads the
connection and input topics from the usual settings variables (``KAFKA_BOOTSTRAP_SERVERS``,
``KPI_TOPIC_PAGE_VIEWS``, ...) and its own parameters from ``BENCH_FLOOR_*`` variables; it writes its status
(count, monotonic-clock times of its first and last event) as JSON to ``BENCH_FLOOR_STATUS`` every second and
once more when the count reaches ``BENCH_FLOOR_EXPECTED``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson

from stream.kafka.clients import faust_credentials
from stream.settings import Settings

MODES = ("take", "each")  # take: Faust's own batches (noack_take, then ack); each: event by event


@dataclass(frozen=True)
class FloorConfig:
    """What the floor worker needs besides the service settings."""

    app_id: str
    expected: int
    status_path: Path
    mode: str = "take"
    batch_max: int = 2000
    batch_interval_s: float = 0.2

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FloorConfig:
        """Read the ``BENCH_FLOOR_*`` variables."""
        mode = environ.get("BENCH_FLOOR_MODE", "take")
        if mode not in MODES:
            raise ValueError(f"BENCH_FLOOR_MODE={mode!r} is not one of {', '.join(MODES)}")
        return cls(app_id=environ["BENCH_FLOOR_APP_ID"], expected=int(environ["BENCH_FLOOR_EXPECTED"]),
                   status_path=Path(environ["BENCH_FLOOR_STATUS"]), mode=mode)


@dataclass
class FloorCount:
    """The agent's count and the times (``time.monotonic``) its first and last event arrived."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    done: bool = field(default=False)

    def add(self, n: int, first_in: float | None = None) -> None:
        """Count ``n`` events that were just handed to the agent, the first of them received at ``first_in``."""
        if n <= 0:
            return
        now = time.monotonic()
        if self.first is None:
            self.first = now if first_in is None else min(first_in, now)
        self.count += n
        self.last = now

    def write(self, path: Path) -> None:
        """Write the status atomically (the benchmark polls the file)."""
        scratch = path.with_suffix(".tmp")
        scratch.write_bytes(orjson.dumps({"count": self.count, "first": self.first, "last": self.last,
                                          "done": self.done}))
        os.replace(scratch, path)


def build_floor_app(settings: Settings, config: FloorConfig) -> faust.App:
    """A Faust app with one agent over the four input topics that counts events and does nothing else."""
    app = faust.App(
        config.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
    )
    topic = app.topic(*settings.input_topics.values(), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    state = FloorCount()

    def record(n: int, first_in: float | None = None) -> None:
        state.add(n, first_in)
        if not state.done and state.count >= config.expected:
            state.done = True
            state.write(config.status_path)

    async def count_batches(stream: faust.StreamT[Any]) -> None:
        async for events in stream.noack_take(  # type: ignore[attr-defined]  # on Stream, not StreamT
                config.batch_max, within=config.batch_interval_s):
            # A batch is handed over when full: date the first one by when its first event came in (the
            # monitor stamps time_in with time.monotonic), or the first batch would be counted in no time.
            record(len(events), events[0].message.time_in if events else None)
            for event in events:
                event.ack()

    async def count_each(stream: faust.StreamT[Any]) -> None:
        async for _ in stream:
            record(1)

    app.agent(topic, name="count")(count_batches if config.mode == "take" else count_each)

    async def report() -> None:
        state.write(config.status_path)

    app.timer(1.0, name="report")(report)
    return app


def main() -> None:
    """Build the app from the environment and hand over to Faust's command line."""
    settings = Settings.from_env()
    config = FloorConfig.from_env(os.environ)
    app = build_floor_app(settings, config)
    sys.argv = ["bench-floor", *sys.argv[1:]]
    app.main()


if __name__ == "__main__":
    main()
