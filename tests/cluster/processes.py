"""Start real ``fleethub serve`` processes for the cluster and fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from servers import free_port


class ServeProcess:
    """One ``fleethub serve`` child process and its base URLs."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_until_healthy(server: ServeProcess, timeout_s: float = 30.0) -> None:
    """Poll ``/healthz`` until it returns 200; fail early if the process exits."""
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout_s):
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"fleethub serve exited:\n{server.output()}")
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(server.http_url + "/healthz")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.1)


def start_serve(tmp_path: Path, name: str, **settings: str) -> ServeProcess:
    """Start ``fleethub serve`` with ``FLEETHUB_*`` settings on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "FLEETHUB_HOST": "127.0.0.1",
        "FLEETHUB_PORT": str(port),
        "FLEETHUB_LOG_LEVEL": "WARNING",
        **{f"FLEETHUB_{key.upper()}": value for key, value in settings.items()},
    }
    log = tmp_path / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleethub", "serve"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return ServeProcess(process, port, log)


async def stop_serve(server: ServeProcess) -> None:
    """Stop the process with SIGTERM, or SIGKILL after 10 s."""
    server.process.terminate()
    try:
        await asyncio.to_thread(server.process.wait, 10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        await asyncio.to_thread(server.process.wait)


@contextlib.asynccontextmanager
async def serve_processes(
    tmp_path: Path, count: int, **settings: str
) -> AsyncIterator[list[ServeProcess]]:
    """Run ``count`` servers with the same settings; stop them all on exit."""
    servers = [start_serve(tmp_path, f"serve-{n}", **settings) for n in range(count)]
    try:
        await asyncio.gather(*(wait_until_healthy(server) for server in servers))
        yield servers
    finally:
        await asyncio.gather(*(stop_serve(server) for server in servers))


def make_state(index: int, start: datetime | None = None) -> RobotState:
    """A valid state ``index`` tenths of a second after ``start`` (default: now)."""
    start = start or datetime.now(UTC)
    return RobotState(
        timestamp=start + timedelta(seconds=index / 10),
        position=Position(x=index / 10, y=0.0),
        orientation=Orientation(yaw=0.0),
        velocity=Velocity(linear=1.0),
        status=RobotStatus.MOVING,
        battery=90.0,
    )
