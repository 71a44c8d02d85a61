"""How often the bench polls, how long it waits for workers, and when it calls a count final."""

POLL_S = 0.2  # /metrics and status polling interval
SETTLE_S = 3.0  # how long a count must stay unchanged to be final
SETTLE_SHARE = 0.99  # the accounted share of produced events from which a settled count is accepted
STARTUP_TIMEOUT_S = 120.0  # subprocess start to first event
RESTORE_TIMEOUT_S = 900.0  # a restarted worker replaying its changelogs (130 s after a lead-heavy million)
STALL_TIMEOUT_S = 60.0  # no progress for this long: give up
KPI_SETTLE_CAP_S = 30.0  # longest wait for the KPI output to quiesce
READY_POLL_S = 0.05  # polling while a worker starts or takes over: the restore and failover figures are read off
# it, so finer than POLL_S
FAILOVER_TIMEOUT_S = 120.0  # a kill to the survivor processing every partition (the session timeout is 6 s)
LATENCY_WARMUP_S = 2.0  # live traffic before the first probe, so the worker's first fetches are not measured
PROBE_INTERVAL_S = 0.1
PROBE_GRACE_S = 5.0  # a probe not seen this long after the last probe was sent counts as missing
ROLLING_SETTLE_S = 5.0  # probes before the first restart, and after the second worker is ready again
ROLLING_PROBE_GRACE_S = 35.0  # past the 30 s target, so that a late probe is measured rather than called missing
ROLLING_TARGET_S = 30.0  # the delay no probe may exceed during a rolling restart
