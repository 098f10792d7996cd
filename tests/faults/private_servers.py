"""PostgreSQL clusters and Redis servers a test starts, stops and restarts itself.

The shared servers on the standard ports are never touched: each private
server runs on a free port with its data in a temporary directory.
PostgreSQL's ``initdb`` refuses to run as root, so when the tests run as
root the cluster runs as the ``postgres`` system user (through ``runuser``).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from servers import free_port, is_listening


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self._pg_ctl = _postgres_bin("pg_ctl") or "pg_ctl"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as_user, *command], check=True, capture_output=True, timeout=60
        )

    def init(self) -> None:
        initdb = _postgres_bin("initdb")
        if initdb is None:
            _fail_or_skip(
                "initdb is not installed; the PostgreSQL fault test needs it."
            )
        if self._as_user:
            shutil.chown(self.data_dir, "postgres", "postgres")
        self._run(
            initdb,
            "-D",
            str(self.data_dir / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        # The server's output goes to a log file: a pipe would stay open for the
        # server's whole life and block subprocess.run.
        log = str(self.data_dir / "server.log")
        data = str(self.data_dir / "data")
        self._run(
            self._pg_ctl,
            "-D",
            data,
            "-l",
            log,
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        self._run(
            self._pg_ctl, "-D", str(self.data_dir / "data"), "-m", "fast", "-w", "stop"
        )


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Run a fresh cluster for the test; stop it and delete its files after."""
    data_dir = Path(tempfile.mkdtemp(prefix="fleethub-pg-"))
    server = PrivatePostgres(data_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server without persistence on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _fail_or_skip(
                "redis-server is not installed; the Redis fault test needs it."
            )
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        async with asyncio.timeout(10):
            while True:
                if is_listening("127.0.0.1", self.port):
                    return
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        await asyncio.wait_for(self.process.wait(), 10)
        self.process = None


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
