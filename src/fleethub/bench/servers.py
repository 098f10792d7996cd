"""Servers under test as subprocesses, and the samples taken of them.

:func:`start_server` runs fleethub (``python -m fleethub serve``) or a
baseline server script on a free loopback port and yields once the port
accepts connections. :class:`ProcessMonitor` samples the process's CPU time
and resident memory from ``/proc`` in a background thread.

NOTE: the samples read ``/proc``, so CPU and memory figures are Linux-only;
elsewhere they are reported as missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from fleethub.errors import FleethubError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SAMPLE_INTERVAL_S = 0.2
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchError(FleethubError):
    """A benchmark could not run (a server did not start, a load process failed)."""

    code = "bench_failed"


class ServerSpec(msgspec.Struct, frozen=True):
    """How to start one server under test.

    ``kind`` is ``fleethub``, ``minimal`` or ``tutorial``; ``script`` is the
    baseline server script (unused for fleethub).
    """

    kind: str
    database_url: str
    script: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = {}

    def command(self, port: int) -> list[str]:
        """Return the argv that starts this server on ``port``."""
        if self.kind == "fleethub":
            return [
                sys.executable, "-m", "fleethub", "serve", "--migrate",
                "--host", LOOPBACK, "--port", str(port),
                "--database-url", self.database_url, "--log-level", "WARNING",
                *self.extra_args,
            ]  # fmt: skip
        if self.script is None:
            raise BenchError(f"Baseline server {self.kind!r} has no script path.")
        return [
            sys.executable, self.script, "--port", str(port),
            "--database-url", self.database_url, *self.extra_args,
        ]  # fmt: skip


class Sample(msgspec.Struct, frozen=True):
    """CPU seconds used so far and resident memory, at wall-clock ``at``."""

    at: float
    cpu_s: float
    rss_bytes: int


class RunningProcess:
    """A started server: its pid, port and CPU and memory samples."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.monitor = ProcessMonitor(process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


class ProcessMonitor:
    """Samples one process's CPU time and RSS every ``SAMPLE_INTERVAL_S``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> Sample | None:
        """Take one sample now (also stored); None when /proc cannot be read."""
        sample = read_proc(self.pid)
        if sample is not None:
            self.samples.append(sample)
        return sample

    def peak_rss_bytes(self) -> int | None:
        """Return the kernel's high-water mark of resident memory (VmHWM)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return max((s.rss_bytes for s in self.samples), default=None)
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def between(self, start: float, end: float) -> list[Sample]:
        """Return the samples taken between two wall-clock times."""
        return [s for s in self.samples if start <= s.at <= end]

    def cpu_between(self, start: float, end: float) -> float | None:
        """Return the server CPU seconds used between two wall-clock times."""
        before = [s for s in self.samples if s.at <= start]
        after = [s for s in self.samples if s.at >= end]
        if not before or not after:
            return None
        return after[0].cpu_s - before[-1].cpu_s

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            if self.sample() is None:
                return


def read_proc(pid: int) -> Sample | None:
    """Read CPU seconds (user + system) and RSS of ``pid`` from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    # The command name in field 2 may contain spaces; fields after it are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    cpu_ticks = int(fields[11]) + int(fields[12])
    rss_pages = int(statm.split()[1])
    return Sample(
        time.time(), cpu_ticks / _TICKS, rss_pages * os.sysconf("SC_PAGE_SIZE")
    )


def free_port() -> int:
    """Return a loopback port that was free a moment ago.

    NOTE: another process may take the port between this call and the
    server's bind; the server then fails to start and the harness says so.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def start_server(
    spec: ServerSpec, log_dir: Path, timeout_s: float = 60.0
) -> Iterator[RunningProcess]:
    """Start the server, yield it once its port accepts connections, then stop it.

    Stopping sends SIGINT (a graceful shutdown that flushes the writers) and
    waits up to 30 s before killing the process.
    """
    port = free_port()
    log = log_dir / f"{spec.kind}-{port}.log"
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            spec.command(port), stdout=output, stderr=subprocess.STDOUT, env=env
        )
    running = RunningProcess(process, port, log)
    try:
        _wait_listening(running, timeout_s)
        running.monitor.start()
        yield running
    finally:
        running.monitor.stop()
        stop_process(process)


def _wait_listening(running: RunningProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise BenchError(
                f"Server {running.process.args[1:3]} exited with code "
                f"{running.process.returncode} before listening; see {running.log}."
            )
        with contextlib.suppress(OSError):
            socket.create_connection((LOOPBACK, running.port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise BenchError(
        f"Server did not listen on port {running.port} within {timeout_s} s."
    )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Interrupt the process, wait for it, and kill it when it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("bench_server_killed", extra={"pid": process.pid})
        process.kill()
        process.wait()
