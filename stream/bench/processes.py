"""The subprocesses the bench starts: their lifetime, their logs and their peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from stream.bench.errors import BenchError
from stream.brokers.embedded import stop_process

WORKER_ARGV = ("-m", "stream", "worker")


def status_kb(status: str, name: str) -> int | None:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of a ``/proc/<pid>/status`` text; None when it is not there."""
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key == name:
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isascii() and parts[0].isdigit():
                return int(parts[0])
            return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc's CPU times (100 per second on Linux)


def proc_status_reader(pid: int) -> Callable[[], str | None]:
    """Reads ``/proc/<pid>/status``; None once the process is gone (or where there is no /proc)."""
    path = Path("/proc") / str(pid) / "status"

    def read() -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    return read


def cpu_seconds(pid: int) -> float | None:
    """The user plus system CPU seconds process ``pid`` has used (``/proc/<pid>/stat``); None once it is gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ")".
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime and stime, fields 14 and 15


class PeakRss:
    """A process's peak resident set: the kernel's ``VmHWM``, or else the largest ``VmRSS`` sampled."""

    def __init__(self, read_status: Callable[[], str | None]) -> None:
        self._read_status = read_status
        self.sampled_kb = 0

    def sample(self) -> None:
        """Note the current ``VmRSS`` (the fallback when ``VmHWM`` cannot be read at the end)."""
        status = self._read_status()
        rss = status_kb(status, "VmRSS") if status is not None else None
        self.sampled_kb = max(self.sampled_kb, rss or 0)

    def peak_mb(self) -> float | None:
        """The peak in MiB (kB / 1024), None when nothing could be read."""
        status = self._read_status()
        high_water = status_kb(status, "VmHWM") if status is not None else None
        peak_kb = max(high_water or 0, self.sampled_kb)
        return peak_kb / 1024 if peak_kb else None


class ManagedProcess:
    """A subprocess with its output in a log file, stopped (SIGTERM, then SIGKILL) when the block is left.

    Its peak RSS is read just before it is stopped (``peak_rss_mb``), its exit code kept (``returncode``), and the
    moment the bench signalled it to stop (``signalled_at``), from which a successor's restart is timed.
    """

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path,
                 stop_timeout_s: float = 15.0) -> None:
        self.name = name
        self.log_path = log_path
        self._argv, self._env, self._cwd = argv, dict(env), cwd
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._rss: PeakRss | None = None
        self.spawned = 0.0  # time.monotonic() just before the spawn
        self.peak_rss_mb: float | None = None
        self.returncode: int | None = None
        self.signalled_at: float | None = None  # time.monotonic() just before the first SIGTERM or SIGKILL sent

    def __enter__(self) -> ManagedProcess:
        with self.log_path.open("ab") as log_file:
            self.spawned = time.monotonic()
            # Its own session: Ctrl-C reaches only the bench, which then stops it here.
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module with fixed arguments
                self._argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
                cwd=self._cwd, start_new_session=True)
        self._rss = PeakRss(proc_status_reader(self._process.pid))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def check(self) -> None:
        """Raise if the process exited; otherwise sample its RSS.

        Raises:
            BenchError: naming the exit code and the log's last lines.
        """
        if self._process is not None and self._process.poll() is not None:
            # A clean exit (code 0) that the bench did not ask for is most likely a signal from elsewhere.
            signalled = any("Signal received" in line for line in tail(self.log_path, 10_000).splitlines())
            raise BenchError(f"the {self.name} exited with code {self._process.returncode}"
                             + (" after a signal the bench did not send" if signalled else "")
                             + f"; last log lines:\n{tail(self.log_path)}")
        if self._rss is not None:
            self._rss.sample()

    def cpu_seconds(self) -> float | None:
        """The CPU seconds (user plus system) the process has used so far; None when it is not running."""
        return None if self._process is None else cpu_seconds(self._process.pid)

    def terminate(self) -> None:
        """Read the peak RSS and send SIGTERM without waiting (``stop`` then waits), to stop several at once."""
        if self._process is not None and self._process.poll() is None:
            self._note_peak()
            self._note_signal()
            self._process.terminate()

    def stop(self) -> None:
        """Stop the process and reap it; killed when it does not stop in time (or on Ctrl-C while waiting)."""
        process, self._process = self._process, None
        if process is not None:
            if self.peak_rss_mb is None:
                self._note_peak()
            if process.poll() is None:
                self._note_signal()
            stop_process(process, self._stop_timeout_s)
            self.returncode = process.returncode

    def kill(self) -> None:
        """SIGKILL the process (no shutdown of its own: a crash) and reap it."""
        process, self._process = self._process, None
        if process is not None:
            self._note_peak()
            self._note_signal()
            process.kill()
            process.wait()
            self.returncode = process.returncode

    def _note_peak(self) -> None:
        if self._rss is not None:
            self.peak_rss_mb = self._rss.peak_mb()

    def _note_signal(self) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()


def stop_all(processes: Sequence[ManagedProcess]) -> None:
    """SIGTERM every process first, then wait for each, so their shutdowns overlap."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def log_problems(path: Path, limit: int = 40) -> list[str]:
    """Lines of a faust worker's log that look like errors: tracebacks, exceptions and ERROR/CRITICAL records.

    Those logged after the worker got the bench's SIGTERM are marked ``[at shutdown]``.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    found, stopping = [], False
    for line in text.splitlines():
        stopping = stopping or "Signal received" in line
        if any(word in line for word in ("Traceback", "ERROR", "CRITICAL", "Exception")):
            found.append(f"[at shutdown] {line}" if stopping else line)
    return found[:limit]


def worker_argv() -> list[str]:
    """``python -m stream worker`` with this interpreter."""
    return [sys.executable, *WORKER_ARGV]
