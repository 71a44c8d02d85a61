"""The command line of ``kpi-stream bench``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from stream.bench.timing import LATENCY_WARMUP_S, PROBE_INTERVAL_S

DEFAULT_EVENTS = 100_000
DEFAULT_LATENCY_RATE = 2000  # events/s of live traffic in the latency phase
DEFAULT_LATENCY_SECONDS = 20  # how long probes are sent


@dataclass(frozen=True)
class BenchOptions:
    """The command line of ``kpi-stream bench``."""

    events: int
    seed: int
    keep_logs: bool
    floor_mode: str
    skip_latency: bool = False
    skip_two_workers: bool = False
    latency_rate: int = DEFAULT_LATENCY_RATE
    latency_seconds: float = DEFAULT_LATENCY_SECONDS
    lead_rate: float | None = None
    broker: str = "tansu"
    skip_rolling: bool = False

    @classmethod
    def parse(cls, args: list[str]) -> BenchOptions:
        """Parse the arguments (argparse exits on bad ones)."""
        parser = argparse.ArgumentParser(prog="kpi-stream bench",
                                         description="Measure the pipeline's events/s on a backlog, next to a raw "
                                                     "aiokafka consumer and a bare Faust agent, then its state "
                                                     "restore time, two workers' events/s, its latency and its "
                                                     "delays during a rolling restart.")
        parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                            help=f"events to produce (default {DEFAULT_EVENTS})")
        parser.add_argument("--seed", type=int, default=1, help="random seed of the traffic model (default 1)")
        parser.add_argument("--keep-logs", action="store_true",
                            help="keep the broker and worker logs (their directory is printed)")
        parser.add_argument("--floor-mode", choices=("take", "each"), default="take",
                            help="how the Faust floor agent reads: batches like the pipeline (take, default) or "
                                 "event by event (each)")
        parser.add_argument("--skip-two-workers", action="store_true",
                            help="leave out the two-worker phase (two_worker_speedup is then null)")
        parser.add_argument("--skip-latency", action="store_true",
                            help="leave out the latency phase (latency_p50_ms and latency_p99_ms are then null)")
        parser.add_argument("--skip-rolling", action="store_true",
                            help="leave out the rolling-restart phase (its rolling_* figures are then null)")
        parser.add_argument("--latency-rate", type=int, default=DEFAULT_LATENCY_RATE,
                            help=f"events/s of live traffic in the latency and rolling-restart phases, probes not "
                                 f"counted "
                                 f"(default {DEFAULT_LATENCY_RATE})")
        parser.add_argument("--latency-seconds", type=float, default=DEFAULT_LATENCY_SECONDS,
                            help=f"how long the latency phase sends probes, after {LATENCY_WARMUP_S:.0f} s of "
                                 f"warm-up (default {DEFAULT_LATENCY_SECONDS})")
        parser.add_argument("--lead-rate", type=float, default=None,
                            help="share of the backlog's visits that become a lead (default: each channel's own "
                                 "rate, 2.5-6 %%, about 12,000 leads per million events; 1 gives about 195,000)")
        parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                            help="the broker started when KAFKA_BOOTSTRAP_SERVERS is not set: the embedded Tansu "
                                 "(default) or Apache Kafka (fetched with Maven once)")
        options = parser.parse_args(args)
        if options.events < 1:
            parser.error("--events must be at least 1")
        if options.latency_rate < 1:
            parser.error("--latency-rate must be at least 1")
        if options.latency_seconds < PROBE_INTERVAL_S:
            parser.error(f"--latency-seconds must be at least {PROBE_INTERVAL_S}")
        if options.lead_rate is not None and not 0 <= options.lead_rate <= 1:
            parser.error("--lead-rate is a share of visits, between 0 and 1")
        return cls(options.events, options.seed, options.keep_logs, options.floor_mode, options.skip_latency,
                   options.skip_two_workers, options.latency_rate, options.latency_seconds, options.lead_rate,
                   options.broker, options.skip_rolling)
