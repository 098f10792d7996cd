"""Servers, databases and robots shared by the observability tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.settings import Settings

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WAIT_TIMEOUT_S = 10.0


def sqlite_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Return settings for a free loopback port and a fresh SQLite file.

    ``overrides`` may replace any field, the database URL included.
    """
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}",
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        sqlite_settings(tmp_path), migrate_schema=True
    ) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        yield client


async def wait_for(
    condition: Callable[[], Awaitable[bool]], within_s: float = WAIT_TIMEOUT_S
) -> None:
    """Poll ``condition`` until true; raise TimeoutError after ``within_s`` seconds."""
    async with asyncio.timeout(within_s):
        # The conditions read HTTP endpoints, so there is no event to wait on.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def make_states(count: int, battery_from: float = 90.0) -> list[RobotState]:
    """Return ``count`` states one second apart, ending now, battery falling."""
    start = datetime.now(UTC) - timedelta(seconds=count)
    return [
        RobotState(
            timestamp=start + timedelta(seconds=index),
            position=Position(x=index * 0.1, y=0.0),
            orientation=Orientation(yaw=0.0),
            velocity=Velocity(linear=0.1),
            status=RobotStatus.MOVING,
            battery=battery_from - index * 0.01,
        )
        for index in range(count)
    ]


async def send_states(
    server: RunningServer, robot_id: str, states: list[RobotState]
) -> None:
    """Send ``states`` as one robot and wait until every one is acknowledged."""
    async with RobotClient(server.ws_url, robot_id) as client:
        for state in states:
            await client.send_state(state)
        await client.flush(WAIT_TIMEOUT_S)


async def send_raw_frames(
    server: RunningServer,
    robot_id: str,
    frames: list[str],
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Send raw frames on one connection; return the error frames they got back."""
    url = f"{server.ws_url}/ws/robots/{robot_id}"
    async with websockets.connect(url, additional_headers=headers) as socket:
        welcome = json.loads(await socket.recv())
        assert welcome["type"] == "welcome"
        for frame in frames:
            await socket.send(frame)
        return [json.loads(await socket.recv()) for _ in frames]


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Index samples of a Prometheus text page by name and label set."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(
    client: httpx.AsyncClient,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


_database_numbers = itertools.count()


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """Create a uniquely named PostgreSQL database; yield its name, drop it after."""
    async with created_pg_database() as name:
        yield name


@contextlib.asynccontextmanager
async def created_pg_database() -> AsyncIterator[str]:
    """Create a uniquely named PostgreSQL database; yield its name, drop it after.

    Fails the test under CI (``CI`` set) when PostgreSQL is unreachable, and
    skips it elsewhere.
    """
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    name = f"fleethub_obs_{uuid.uuid4().hex[:10]}_{next(_database_numbers)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def set_database_reachable(name: str, reachable: bool) -> None:
    """Allow or refuse new connections to ``name``; refusing also ends current ones."""
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        flag = "true" if reachable else "false"
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {flag}')
        if not reachable:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await admin.close()
