"""The bench's report: the human-readable lines and, last, the JSON line of figures."""

from __future__ import annotations

from pathlib import Path

import orjson

from stream.bench.results import RestoreResult, Results, RollingResult, TwoWorkerResult
from stream.bench.timing import KPI_SETTLE_CAP_S, ROLLING_PROBE_GRACE_S, ROLLING_TARGET_S

MISSING_SHARE_WARNING = 0.01  # more missing probes than this share make the latency line say so


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, 0 when the denominator is 0."""
    return numerator / denominator if denominator else 0.0


def rounded(value: float | None, digits: int) -> float | None:
    """``value`` rounded for the JSON line, None kept."""
    return None if value is None else round(value, digits)


def megabytes(value: float | None) -> str:
    """A peak RSS for the human lines."""
    return "n/a" if value is None else f"{value:.0f} MB"


def two_worker_speedup(results: Results) -> float | None:
    """Two workers' events/s divided by one worker's, in the same run."""
    if results.two_workers is None:
        return None
    return ratio(results.two_workers.rate.per_second, results.pipeline.rate.per_second)


def state_mb_per_million(state_bytes: int | None, results: Results) -> float | None:
    """The disk store's size per million events produced (MiB)."""
    if state_bytes is None or not results.produced.total:
        return None
    return state_bytes / 2**20 * 1_000_000 / results.produced.total


def count(value: int | None) -> str:
    """A record count for the human lines."""
    return "n/a" if value is None else f"{value:,}"


def restore_lines(restore: RestoreResult) -> list[str]:
    """The human lines of the restore phase."""
    restarts = (restore.after_sigterm, restore.after_sigkill, restore.without_local_state)
    return [
        f"restore after SIGTERM:  {restore.after_sigterm.stop_to_ready_s:.2f} s, after SIGKILL "
        f"{restore.after_sigkill.stop_to_ready_s:.2f} s, without local state "
        f"{restore.without_local_state.stop_to_ready_s:.2f} s (the previous worker's stop signal to the new one's "
        "leadgen_worker_ready 1; from its spawn "
        + " / ".join(f"{restart.spawn_to_ready_s:.2f}" for restart in restarts) + " s)",
        "restore reads:          changelog records to read "
        + " / ".join(count(restart.changelog_records) for restart in restarts)
        + " (Faust's recovery tables in each new worker's log); past the local state's offsets "
        + " / ".join(count(restart.past_checkpoints) for restart in restarts)
        + f"; SIGKILL once it had accounted {restore.accounted_at_kill} of {restore.extra_events} extra events",
    ]


def failover_lines(two: TwoWorkerResult) -> list[str]:
    """The human lines of the failover and of what the standbys cost."""
    lines = []
    failover = two.failover
    if failover is not None:
        def seconds(value: float | None) -> str:
            return "not seen" if value is None else f"{value:.2f} s"

        lines.append(
            f"failover:               {seconds(failover.failover_s)} (SIGKILL of worker 2 of 2 to worker 1 owning "
            f"all {failover.partitions_before} partitions but the changelogs' ({failover.partitions_after} at the "
            f"end), {seconds(failover.partitions_s)}, and putting the {failover.probes_sent} probe leads sent at the "
            f"kill on the cost-per-lead KPI topic ({failover.probes_seen} seen), {seconds(failover.probes_s)}; its "
            f"recovery had {count(failover.changelog_records)} changelog records to read)")
    lines.append(
        f"standby cost:           {two.standby_replicas} standby replica per worker; changelog records "
        f"{count(two.changelog_records)} (the two-worker app's changelogs, which the standbys read between them); "
        "peak RSS per worker above; not measured without standbys")
    return lines


def scale_and_latency_lines(results: Results) -> list[str]:
    """The human lines of the restore, two-worker and latency phases."""
    pipeline, two, latency = results.pipeline, results.two_workers, results.latency
    lines = [
        f"peak RSS:               {megabytes(pipeline.peak_rss_mb)} (the one-worker pipeline process's VmHWM, "
        "MB = kB / 1024, read just before it was stopped)",
        "state on disk:          " + ("no disk store" if pipeline.state_bytes is None else
                                      f"{pipeline.state_bytes / 2**20:.1f} MB, "
                                      f"{state_mb_per_million(pipeline.state_bytes, results) or 0:.1f} MB per million "
                                      "events "
                                      "(the one-worker pipeline's RocksDB files once it stopped)"),
        *restore_lines(results.restore),
        "cold start:             " + ("n/a" if pipeline.ready_s is None else f"{pipeline.ready_s:.2f} s")
        + f" (the one-worker pipeline's spawn to leadgen_worker_ready 1, no state yet; it exited with code "
        f"{pipeline.exit_code} on SIGTERM)",
    ]
    if two is None and results.two_workers_failure is not None:
        lines.append("two workers:            FAILED, no two-worker, failover or standby figure: "
                     + results.two_workers_failure.splitlines()[0])
    elif two is None:
        lines.append("two workers:            skipped (--skip-two-workers)")
    else:
        lines += [
            f"two workers:            {two.rate.per_second:10.0f} events/s ({two.rate.events} events in "
            f"{two.rate.seconds:.2f} s; accounted {two.accounted} over both; start to first event "
            f"{two.startup_s:.1f} s; peak RSS {', '.join(megabytes(peak) for peak in two.peak_rss_mb)})",
            f"two workers / one:      {two_worker_speedup(results):.3f} (two-worker events/s "
            f"{two.rate.per_second:.0f} / one-worker pipeline events/s {pipeline.rate.per_second:.0f})",
            *failover_lines(two),
        ]
    if latency is None:
        lines.append("latency:                skipped (--skip-latency)")
        return lines
    missing_share = ratio(latency.missing, latency.probes_sent)
    percentiles = ("no probe seen" if latency.p50_ms is None or latency.p99_ms is None
                   else f"p50 {latency.p50_ms:.0f} ms, p99 {latency.p99_ms:.0f} ms")
    lines += [
        f"latency:                {percentiles} (a probe lead handed to the producer to its first cost-per-lead "
        f"KPI record read; probes seen {latency.probes_seen}/{latency.probes_sent}, missing {latency.missing}; "
        f"live traffic {latency.traffic.per_second:.0f} events/s for {latency.traffic.seconds:.1f} s)"
        + ("" if latency.cpu_utilisation is None or latency.cpu_us_per_event is None
           else f"; worker CPU {100 * latency.cpu_utilisation:.0f} % of a core, {latency.cpu_us_per_event:.0f} µs "
           "per live event")
        + (f"; WARNING: {100 * missing_share:.1f} % of the probes are missing (more than "
           f"{100 * MISSING_SHARE_WARNING:.0f} %), so the percentiles, over the probes seen, understate the latency"
           if missing_share > MISSING_SHARE_WARNING else ""),
        "latency to /metrics:    not measured (the gauges have no campaign label, so no probe can be told apart "
        "there)",
    ]
    return lines


def rolling_lines(rolling: RollingResult | None) -> list[str]:
    """The human lines of the rolling-restart phase."""
    if rolling is None:
        return ["rolling restart:        skipped (--skip-rolling)"]
    if rolling.max_delay_ms is None or rolling.p50_ms is None or rolling.p99_ms is None:
        delays = "no probe seen"
    else:
        delays = f"max {rolling.max_delay_ms:.0f} ms, p50 {rolling.p50_ms:.0f} ms, p99 {rolling.p99_ms:.0f} ms"
    before = "n/a" if rolling.before_max_ms is None else f"{rolling.before_max_ms:.0f} ms"
    over_target = rolling.max_delay_ms is not None and rolling.max_delay_ms > 1000 * ROLLING_TARGET_S
    problems = [f"{rolling.missing} probes missing (not seen {ROLLING_PROBE_GRACE_S:.0f} s after the last)"
                if rolling.missing else "",
                f"{rolling.miscounted} probes counted other than once" if rolling.miscounted else "",
                f"a probe delayed more than {ROLLING_TARGET_S:.0f} s" if over_target else ""]
    verdict = "; ".join(problem for problem in problems if problem)
    lines = [
        f"rolling restart:        {delays} (two workers under live traffic, each SIGTERMed and started again on "
        f"its data dir in turn; probes seen {rolling.probes_seen}/{rolling.probes_sent}, missing "
        f"{rolling.missing}, counted other than one lead {rolling.miscounted}; longest wait at the first SIGTERM "
        f"{before}; live traffic "
        f"{rolling.traffic.per_second:.0f} events/s for {rolling.traffic.seconds:.1f} s)"
        + (f"; WARNING: {verdict}" if verdict else ""),
    ]
    lines += [f"  worker {step.worker} restart:      SIGTERM to exit {step.stop_s:.1f} s (exit code {step.exit_code}), "
              f"spawn to both ready {step.ready_s:.1f} s, stop to ready {step.total_s:.1f} s"
              for step in rolling.steps]
    return lines


def report(results: Results, floor_mode: str, work_dir: Path | None) -> list[str]:
    """The human-readable lines and, last, the JSON line."""
    produced, raw, floor, pipeline = results.produced, results.raw, results.floor, results.pipeline
    total = produced.total
    mix = ", ".join(f"{kind} {count}" for kind, count in produced.per_kind.items())
    vs_floor = ratio(pipeline.rate.per_second, floor.per_second)
    vs_raw = ratio(pipeline.rate.per_second, raw.rate.per_second)
    lines = [
        f"events produced:        {total} ({mix}) in {produced.seconds:.1f} s",
        "CPU per event:          " + ("not read" if pipeline.cpu_us_per_event is None
                                      else f"{pipeline.cpu_us_per_event:.1f} µs")
        + " (the pipeline worker's user + system CPU over the span its events/s divides by, per event)",
        f"pipeline:               {pipeline.rate.per_second:10.0f} events/s ({total} events in "
        f"{pipeline.rate.seconds:.2f} s; accounted {pipeline.accounted}, pending leads "
        f"{pipeline.pending_leads:.0f}; worker start to first event {pipeline.startup_s:.1f} s; "
        + (f"{pipeline.middle.per_second:.0f}/s from 10 % to 90 % accounted)" if pipeline.middle else ")"),
        f"(a) raw consumer:       {raw.rate.per_second:10.0f} events/s ({raw.rate.events} in {raw.rate.seconds:.2f} s; "
        f"{raw.with_join.per_second:.0f}/s counting connection and group join; {raw.undecodable} undecodable)",
        f"(b) faust floor ({floor_mode}): {floor.per_second:10.0f} events/s ({floor.events} in {floor.seconds:.2f} s)",
        f"pipeline / faust floor: {vs_floor:.3f}",
        f"pipeline / raw:         {vs_raw:.4f}",
        f"pipeline outcome:       duplicates {pipeline.duplicates}, rejected "
        f"{dict(sorted(pipeline.rejected.items())) or 0}, KPI records {pipeline.kpi_records}"
        + (f", KPI output quiet {pipeline.kpi_quiet_s:.1f} s after the first event"
           if pipeline.kpi_quiet_s is not None else f", KPI output still growing after {KPI_SETTLE_CAP_S:.0f} s")
        + f"; /metrics scrape {pipeline.scrape_ms:.1f} ms",
        *scale_and_latency_lines(results),
        *rolling_lines(results.rolling),
        f"worker logs:            {len(results.worker_problems)} error-looking lines"
        + "".join(f"\n    {line}" for line in results.worker_problems[:10]),
    ]
    if work_dir is not None:
        lines.append(f"logs kept in {work_dir}")
    latency, restore, two, rolling = results.latency, results.restore, results.two_workers, results.rolling
    failover = two.failover if two else None
    lines.append(orjson.dumps({
        "events": total,
        "cpu_us_per_event": rounded(pipeline.cpu_us_per_event, 2),
        "pipeline_events_per_second": round(pipeline.rate.per_second, 1),
        "raw_events_per_second": round(raw.rate.per_second, 1),
        "faust_floor_events_per_second": round(floor.per_second, 1),
        "pipeline_vs_faust_floor": round(vs_floor, 4),
        "pipeline_vs_raw": round(vs_raw, 5),
        "latency_p50_ms": rounded(latency.p50_ms if latency else None, 1),
        "latency_p99_ms": rounded(latency.p99_ms if latency else None, 1),
        "latency_cpu_utilisation": rounded(latency.cpu_utilisation if latency else None, 3),
        "latency_cpu_us_per_event": rounded(latency.cpu_us_per_event if latency else None, 1),
        "two_worker_speedup": rounded(two_worker_speedup(results), 3),
        "peak_rss_mb": rounded(pipeline.peak_rss_mb, 1),
        "state_mb_per_million_events": rounded(state_mb_per_million(pipeline.state_bytes, results), 1),
        "restore_after_sigterm_s": round(restore.after_sigterm.stop_to_ready_s, 2),
        "restore_after_sigkill_s": round(restore.after_sigkill.stop_to_ready_s, 2),
        "restore_without_local_state_s": round(restore.without_local_state.stop_to_ready_s, 2),
        "restore_seconds": round(restore.without_local_state.stop_to_ready_s, 2),  # the cold figure, as before
        "failover_s": rounded(failover.failover_s if failover else None, 2),
        "two_worker_peak_rss_mb": [rounded(peak, 1) for peak in two.peak_rss_mb] if two else None,
        "standby_changelog_records": two.changelog_records if two else None,
        "rolling_max_delay_ms": rounded(rolling.max_delay_ms if rolling else None, 1),
        "rolling_before_max_delay_ms": rounded(rolling.before_max_ms if rolling else None, 1),
        "rolling_p50_ms": rounded(rolling.p50_ms if rolling else None, 1),
        "rolling_p99_ms": rounded(rolling.p99_ms if rolling else None, 1),
        "rolling_missing": rolling.missing if rolling else None,
        "rolling_miscounted": rolling.miscounted if rolling else None,
        "rolling_stop_to_ready_seconds": [round(step.total_s, 2) for step in rolling.steps] if rolling else None,
    }).decode())
    return lines
