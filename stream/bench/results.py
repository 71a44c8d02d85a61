"""What each phase of a bench run measured, and everything one run measured."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """A number of events handled in a number of seconds."""

    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Events per second (0 when no time passed)."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class RawResult:
    """What the raw consumer measured."""

    rate: Rate
    with_join: Rate
    undecodable: int


@dataclass(frozen=True)
class PipelineResult:
    """What the pipeline measurement saw."""

    rate: Rate
    accounted: int
    startup_s: float
    kpi_quiet_s: float | None
    kpi_records: int
    pending_leads: float
    rejected: dict[str, int]
    duplicates: int
    scrape_ms: float
    middle: Rate | None  # between 10 % and 90 % accounted
    peak_rss_mb: float | None
    ready_s: float | None  # spawn to the first poll showing leadgen_worker_ready 1
    exit_code: int | None  # after the bench's SIGTERM
    cpu_us_per_event: float | None = None  # the worker's user + system CPU over the span the rate divides by
    state_bytes: int | None = None  # the disk store's files once the worker stopped (None: no disk store)


@dataclass(frozen=True)
class Restart:
    """A pipeline worker stopped, and a new one with its app id started: how long until the new one was ready."""

    stop_to_ready_s: float  # from the stop signal to the previous worker to the new one's leadgen_worker_ready 1
    spawn_to_ready_s: float
    changelog_records: int | None  # what its recovery had to read, by Faust's log tables (None: not logged)
    past_checkpoints: int | None  # the disk store's "N records past it to read", summed (None: no local state)


@dataclass(frozen=True)
class RestoreResult:
    """The three restarts of the restore phase, in the order they ran."""

    after_sigterm: Restart  # on the same data dir, the previous worker stopped cleanly
    after_sigkill: Restart  # on the same data dir, the previous worker killed while it handled new events
    without_local_state: Restart  # on a new, empty data dir: the whole changelog read
    extra_events: int  # produced after the first restart, for the worker then killed
    accounted_at_kill: int  # of those (and any re-read input), how many the killed worker had accounted


@dataclass(frozen=True)
class FailoverResult:
    """One of two workers with standbys killed: how long until the survivor processed its partitions."""

    failover_s: float | None  # the later of the two below (None: one of them was not seen in time)
    partitions_s: float | None  # kill to the first poll at which the survivor owned every partition
    probes_s: float | None  # kill to the arrival of the last probe's KPI record
    partitions_before: int  # leadgen_assigned_partitions over both workers before the kill
    partitions_after: int  # the survivor's at the end
    probes_sent: int
    probes_seen: int
    changelog_records: int | None  # what the survivor's recovery after the kill had to read (None: not logged)


@dataclass(frozen=True)
class TwoWorkerResult:
    """What the two-worker measurement saw."""

    rate: Rate
    accounted: int  # summed over both workers; more than produced when a rebalance made one read input again
    startup_s: float
    peak_rss_mb: tuple[float | None, ...]
    standby_replicas: int
    changelog_records: int | None  # the two-worker app's changelog topics, summed end offsets (None: not read)
    failover: FailoverResult | None = None


@dataclass(frozen=True)
class LatencyResult:
    """What the latency measurement saw."""

    p50_ms: float | None
    p99_ms: float | None
    probes_sent: int
    probes_seen: int
    traffic: Rate  # the live events sent (probes not counted), over the time they were sent
    cpu_utilisation: float | None = None  # the worker's CPU seconds per second while the traffic was sent
    cpu_us_per_event: float | None = None  # the same CPU per live event sent

    @property
    def missing(self) -> int:
        """Probes not seen in time."""
        return self.probes_sent - self.probes_seen


@dataclass(frozen=True)
class RestartStep:
    """One worker of the rolling restart: stopped with SIGTERM, started again on its data dir."""

    worker: int  # 1 or 2
    stop_s: float  # SIGTERM to the process's exit
    ready_s: float  # the new process's spawn to both workers ready with partitions
    exit_code: int | None  # of the stopped process (-9: it was killed after not stopping in time)

    @property
    def total_s(self) -> float:
        """SIGTERM to ready again."""
        return self.stop_s + self.ready_s


@dataclass(frozen=True)
class RollingResult:
    """What the rolling-restart measurement saw."""

    max_delay_ms: float | None  # over the probes seen
    before_max_ms: float | None  # the longest a probe had waited at the first SIGTERM: whether the group kept up
    p50_ms: float | None
    p99_ms: float | None
    probes_sent: int
    probes_seen: int
    miscounted: int  # probes with a cost-per-lead record counting other than one lead
    steps: tuple[RestartStep, ...]
    traffic: Rate  # the live events sent (probes not counted), over the time they were sent

    @property
    def missing(self) -> int:
        """Probes not seen in time."""
        return self.probes_sent - self.probes_seen


@dataclass(frozen=True)
class Produced:
    """How many events were produced per topic, and how fast."""

    per_topic: dict[str, int]
    per_kind: dict[str, int]  # the same counts, by event kind (the default topic name)
    seconds: float

    @property
    def total(self) -> int:
        """All events produced."""
        return sum(self.per_topic.values())


@dataclass(frozen=True)
class Results:
    """Everything one run measured (None: the phase was skipped)."""

    produced: Produced
    raw: RawResult
    floor: Rate
    pipeline: PipelineResult
    restore: RestoreResult
    two_workers: TwoWorkerResult | None
    latency: LatencyResult | None
    worker_problems: list[str]
    two_workers_failure: str | None = None  # why the two-worker phase failed (its figures are then None)
    rolling: RollingResult | None = None
