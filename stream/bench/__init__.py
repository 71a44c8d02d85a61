"""``kpi-stream bench``: the pipeline's throughput, latency, scale-out, memory, restart, failover and rolling restart.

One run, all on this machine, each measurement after the previous one so that they do not compete for the CPU:

1. start an embedded Tansu broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) and create fresh topics, named
   after a fresh run id, so reruns against the same broker never mix data;
2. produce ``--events`` synthetic events (backfill mode: fixed seed, event times from a whole hour some hours
   ago) and count them per topic;
3. on that backlog:

   (a) a raw aiokafka consumer that only decodes each value with orjson;
   (b) the Faust floor: a bare Faust agent (``stream.tools.bench_floor``) that only counts events;
   the pipeline: ``python -m stream worker`` on the backlog, watched through its ``/metrics``;
4. restore: three restarts of the pipeline worker's app id, one after another, on its web port and data dir:
   (i) the pipeline worker is stopped (SIGTERM) and a new one started on its data dir; once it is ready, 1 % of
   the backlog's count of events (at least 1000; another seed, so no duplicates) is produced to the input topics
   and, as soon as its ``/metrics`` shows it accounted any of them, (ii) it is killed (SIGKILL) and another one
   started on the same data dir; once that one is ready, (iii) it is stopped (SIGTERM) and a last one started on a
   new, empty data dir, which reads the whole changelogs;
5. two workers (unless ``--skip-two-workers``): two ``python -m stream worker`` processes in one new consumer
   group (a fresh app id, each with its own web port and data dir, ``KPI_STANDBY_REPLICAS=1``: each keeps a warm
   copy of the other's table partitions) on the same backlog, and the restore phase's extra events, from their
   beginning; once all are accounted for and their KPI output is quiet (as for the pipeline, 30 s at most, which
   leaves the standbys the time to read the changelogs' last writes), the second worker is killed (SIGKILL) for the
   failover figure, then the first is stopped;
6. latency (unless ``--skip-latency``): a worker with a fresh app id on new, empty topics, fed live events;
7. rolling restart (unless ``--skip-rolling``): two workers in one fresh group on new, empty topics (each its own
   web port and data dir, the default store and standbys), fed live events with probes as in 6; each worker in
   turn is stopped (SIGTERM) and started again on its data dir.

How each figure is measured:

- raw consumer: messages / time from the start of the first poll that returned messages (so the Tansu group
  join, ~3 s, is left out) to the last message;
- Faust floor: events / time from its first event's arrival (faust's monitor stamps it) to its last event;
- pipeline: produced events / time from the first ``/metrics`` poll (every 0.2 s) at which
  ``leadgen_events_total + leadgen_events_rejected_total + leadgen_events_duplicate_total`` is non-zero to the
  poll at which that sum reached its final value. It is final when it reaches the number produced; but a stage
  change is counted only once its lead arrives, so some may stay pending (``leadgen_pending_leads``): once the
  sum is at least 99 % of the events produced, it is also final when it has not changed for 3 s (and the end is
  the poll where it last changed, not the 3 s later). When the first non-zero poll already finds the final
  value (a backlog read between two polls), the time starts at the poll before, which found nothing: a lower
  bound on the rate. After that the bench keeps polling until
  ``leadgen_kpi_records_total`` has not grown for 3 s (30 s at most), to report when the KPI output quiesced;
- ``cpu_us_per_event``: the one-worker pipeline process's user + system CPU seconds (``/proc/<pid>/stat``), read
  at each ``/metrics`` poll, from the poll the pipeline's time starts at to the poll where the count reached its
  final value, per produced event (start-up and the wait for the KPI output to quiesce are left out);
  ``latency_cpu_utilisation`` and ``latency_cpu_us_per_event``: the latency worker's CPU over the time the live
  traffic was sent (its warm-up included), per second and per live event;
- ``peak_rss_mb``: the one-worker pipeline process's ``VmHWM`` (peak resident set) from ``/proc/<pid>/status``,
  read just before it is stopped, in MiB; where that cannot be read, the largest ``VmRSS`` seen at the polls;
- ``state_mb_per_million_events``: the bytes of the one-worker pipeline's RocksDB files (every store under its
  data dir) once it stopped, in MiB per million events produced; null with ``KPI_STORE=memory://``;
- ``restore_after_sigterm_s``, ``restore_after_sigkill_s``, ``restore_without_local_state_s``: for restarts (i),
  (ii) and (iii) of phase 4, from the moment the bench sent the previous worker its signal (so the SIGTERMed
  worker's own shutdown counts, and after a SIGKILL the group's wait for the dead member's session to time out,
  ``KPI_SESSION_TIMEOUT``) to the first ``/metrics`` poll (every 0.05 s) of the new worker showing
  ``leadgen_worker_ready`` 1, which the worker sets once its tables are recovered. Each is also shown from the new
  worker's spawn (interpreter start, group join and recovery), next to the one-worker pipeline's cold start to ready
  on empty tables. ``restore_seconds``, the one restore figure of earlier versions, is kept in the JSON line as the
  restart without local state (a full changelog replay, what it measured before the disk store). The human lines
  also show, from each new worker's log, the changelog records its recovery had to read (Faust's "Highwater" and
  "Reading Starts At" tables of the active partitions: the difference summed over them) and the disk store's
  "N records past it to read" summed (none without local state), and how many extra events the killed worker had
  accounted;
- two workers: the same rule as the pipeline, on the sum of the accounted counts over both workers' ``/metrics``
  (the last page each answered). A rebalance at start can make a worker read some input again, so the sum may
  pass the number produced: reaching it counts as done. ``two_worker_speedup`` is the two-worker rate divided by
  the one-worker pipeline rate of the same run; the peak RSS of each worker is read as for the pipeline (the
  survivor's includes the failover, the killed worker's is read just before the kill);
- ``failover_s``: just before the kill, a reader is assigned every partition of the cost-per-lead KPI topic at its
  end; the second worker is then killed (SIGKILL) and right after it two probe leads (as in the latency phase,
  campaign ``probe-<n>``) are produced to each partition of the leads topic, each with a lead id and campaign of
  its own, so that they also spread over the entity and cell partitions. The figure is the time from the kill to
  the later of: the first ``/metrics`` poll (every 0.05 s) at which the survivor's ``leadgen_assigned_partitions``
  over every topic but the changelogs (every worker is assigned all changelog partitions, as owner or standby)
  equals the two workers' sum before the kill; and the arrival of the last probe's KPI record. A probe's record
  is sent only by the owner of its cell partition after its entity partition's owner handled the lead, and Faust
  processes nothing while a recovery runs, so the last record means that the survivor had recovered the dead
  worker's partitions and processed their input. It includes the session timeout (6 s by default), after which
  the group notices the dead member. Both parts are shown, with the changelog records the survivor's recovery
  after the kill had to read (from its log, as above: a warm standby reads only the last records). Null when
  either is not seen within 120 s;
- ``standby_changelog_records``: the sum of the end offsets of the two-worker app's changelog topics at the end:
  with two workers and one standby each, every changelog partition has one standby, the worker that is not its
  owner, so this is what the standbys read between them (while the owner writes it); the cost without standbys
  is not measured (it would take another two-worker run over the whole backlog). ``two_worker_peak_rss_mb`` lists
  the two workers' peaks, the standbys' copies included;
- latency: once the worker reports ``leadgen_worker_ready`` 1 and assigned partitions (so the group join is not
  counted), a confluent-kafka producer sends live events (event time = now) at ``--latency-rate`` events/s for
  2 s of warm-up plus ``--latency-seconds``; during the latter it also sends a probe every 100 ms: a valid lead
  whose campaign, ``probe-<n>``, no other event has. A reader assigned to every partition of the cost-per-lead
  KPI topic (which carries a record per channel and campaign) notes when the first record whose dimensions
  hold that campaign arrives. A probe's latency is that arrival minus the moment it was handed to the producer
  (both on this process's monotonic clock); ``latency_p50_ms`` and ``latency_p99_ms`` are nearest-rank
  percentiles over the probes seen. A probe not seen within 5 s of the last probe is missing. The time until a
  ``/metrics`` gauge shows a probe is not measured: gauges have no campaign label, so no probe can be told
  apart there;
- rolling restart: once both workers report ready with assigned partitions, the latency phase's producer (at
  ``--latency-rate``), probes and reader run for the 2 s warm-up and 5 s of probes; then worker 1 gets SIGTERM,
  and once it exited it is spawned again with the same settings and data dir, and the bench waits until both
  workers report ready with assigned partitions; then the same for worker 2; then 5 s more of probes. Ready is
  what a readiness probe would see: the surviving worker's gauges do not drop while the group rebalances, so
  the next step may start during a rebalance, as an orchestrator's would. Each step's figures: SIGTERM to exit,
  and spawn to that ready poll (every 0.05 s), summed as stop to ready (``rolling_stop_to_ready_seconds``). A
  probe's delay is measured as in the latency phase, over every probe of the phase, before, during and after
  the restarts: ``rolling_max_delay_ms`` (the target is at most 30 s), ``rolling_p50_ms``, ``rolling_p99_ms``;
  ``rolling_before_max_delay_ms`` is the longest any probe had waited at the first SIGTERM (its delay if seen
  by then, else the time since it was sent), to tell a restart's delays from a group that was behind already.
  A probe not seen within 35 s of the last probe is missing (``rolling_missing``): the grace is past the
  target, so a late probe is measured rather than called missing. On Tansu the first SIGTERM costs a session
  timeout more than on Apache Kafka: Tansu numbers a group's first generation 0, and the consumer sends its
  LeaveGroup only from generation 1 on, so the group notices the stopped worker only when its session expires.
  ``rolling_miscounted`` counts the probes for which some cost-per-lead record (any window size, any revision)
  has a ``denominator`` (leads in that window, channel and campaign) other than 1. A probe is the only lead of
  its campaign, so a probe counted twice (its event read again after a restart and let past the duplicate
  check, or a table change applied twice) shows there; a probe lost before any record of it was sent shows as
  missing. What is not checked: a probe whose count is lost after its first record was sent (state rolled back
  to before it: nothing is sent again, so nothing shows); the live traffic's own leads, page views, stage
  changes and spend (the probes are a sample, 10 leads/s next to about 25/s of live leads at 2,000 events/s;
  a restart re-reads the offsets since the last commit, which hold probes, so a re-read counted twice would
  hit them); the final records' totals against what was produced. ``rolling-probes.csv`` (each probe's send
  time and delay), ``rolling-steps.csv`` (each step's SIGTERM, exit and ready times) and
  ``rolling-timeline.csv`` (each worker's readiness, partitions, lag and accounted events every second) are
  kept with the logs, on one clock: seconds since the phase started.

Its modules, one thing each: ``options`` (the command line), ``run`` (the phases in order and
``run_bench``), ``backlog``, ``baselines`` ((a) and (b)), ``pipeline`` (one worker, two workers), ``restore``,
``failover``, ``recovery_log`` (what a worker's log says its recovery read), ``latency``, ``rolling`` (the rolling
restart), ``watch`` (``/metrics`` polling), ``processes``, ``run_settings``, ``results``, ``report``, ``timing``,
``progress`` and ``errors``.

The last line printed is a JSON object with the figures; a skipped phase's figures are null (the failover's and
the standbys' with the two workers).
"""

from __future__ import annotations

from stream.bench.errors import BenchError
from stream.bench.failover import stream_partitions
from stream.bench.latency import (
    PROBE_CAMPAIGN,
    PROBE_CHANNEL,
    ProbeLog,
    percentiles_ms,
    probe_event,
    probe_in_record,
    probe_record,
)
from stream.bench.options import BenchOptions
from stream.bench.processes import PeakRss, status_kb
from stream.bench.progress import Progress
from stream.bench.recovery_log import records_past_checkpoints, recovery_records
from stream.bench.report import report
from stream.bench.restore import extra_events
from stream.bench.results import (
    FailoverResult,
    LatencyResult,
    PipelineResult,
    Produced,
    Rate,
    RawResult,
    Restart,
    RestartStep,
    RestoreResult,
    Results,
    RollingResult,
    TwoWorkerResult,
)
from stream.bench.run import run_bench
from stream.bench.timing import SETTLE_S
from stream.bench.watch import PipelineWatch, Timeline, all_ready

__all__ = [
    "PROBE_CAMPAIGN",
    "PROBE_CHANNEL",
    "SETTLE_S",
    "BenchError",
    "BenchOptions",
    "FailoverResult",
    "LatencyResult",
    "PeakRss",
    "PipelineResult",
    "PipelineWatch",
    "ProbeLog",
    "Produced",
    "Progress",
    "Rate",
    "RawResult",
    "Restart",
    "RestartStep",
    "RestoreResult",
    "Results",
    "RollingResult",
    "Timeline",
    "TwoWorkerResult",
    "all_ready",
    "extra_events",
    "percentiles_ms",
    "probe_event",
    "probe_in_record",
    "probe_record",
    "records_past_checkpoints",
    "recovery_records",
    "report",
    "run_bench",
    "status_kb",
    "stream_partitions",
]
