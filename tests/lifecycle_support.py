"""Fixtures and helpers for the command and mission tests.

Every test runs a real server on 127.0.0.1 port 0 over a fresh database:
SQLite under ``tmp_path``, or a PostgreSQL database created for the test and
dropped after it. The background sweeps are set to run once an hour, so tests
drive expiry and timeouts by calling ``run_sweeps`` with a chosen time.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import pytest_asyncio

from fleethub.bus.base import EVENTS
from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.models import utcnow
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.services import Services
from fleethub.settings import Settings

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WAIT_S = 10.0


async def create_postgres_database() -> str:
    """Create a uniquely named database and return its name.

    Without a server the test is skipped, or fails when ``CI`` is set.
    """
    name = f"fleethub_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(params=["sqlite"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A fresh database; tests parametrize it with ``postgresql`` to cover both."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/fleethub.db"
        return
    name = await create_postgres_database()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await drop_postgres_database(name)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "port": 0,
        "database_url": database_url,
        "lifecycle_sweep_interval_s": 3600.0,
        "command_ack_timeout_s": 10.0,
        "mission_battery_reserve_percent": 30.0,
        "mission_default_timeout_s": 120.0,
        **overrides,
    }
    return Settings(**values)


@pytest_asyncio.fixture
async def server(database_url: str) -> AsyncIterator[RunningServer]:
    """A running fleethub on port 0 over the test's database."""
    async with running_server(
        make_settings(database_url), migrate_schema=True
    ) as running:
        yield running


@pytest_asyncio.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=WAIT_S) as client:
        yield client


def services_of(server: RunningServer) -> Services:
    return server.app.state.services


class EventWatch:
    """Every event published on the bus since the watch started."""

    def __init__(self, services: Services) -> None:
        self.bus = services.bus
        self.subscription = self.bus.subscribe(frozenset({EVENTS}), maxsize=100_000)
        self.seen: list[dict[str, Any]] = []

    async def wait_for(
        self, event_type: str, wait_s: float = WAIT_S, **fields: Any
    ) -> dict[str, Any]:
        """Return the first event of ``event_type`` whose data matches ``fields``."""
        async with asyncio.timeout(wait_s):
            index = 0
            while True:
                while index < len(self.seen):
                    event = self.seen[index]
                    index += 1
                    if _matches(event, event_type, fields):
                        return event
                _channel, message = await self.subscription.get()
                self.seen.append(msgspec.json.decode(message)["data"])

    def types(self, **fields: Any) -> list[str]:
        """Return the types of the events seen so far whose data matches ``fields``."""
        for _channel, message in self.subscription.drain():
            self.seen.append(msgspec.json.decode(message)["data"])
        return [e["type"] for e in self.seen if _matches(e, e["type"], fields)]

    def forget(self) -> None:
        """Drop the events seen so far, so waits only match later ones."""
        self.subscription.drain()
        self.seen.clear()

    def close(self) -> None:
        self.bus.unsubscribe(self.subscription)


def _matches(event: dict[str, Any], event_type: str, fields: dict[str, Any]) -> bool:
    if event["type"] != event_type:
        return False
    data = {**event["data"], "robot_id": event["robot_id"]}
    return all(data.get(key) == value for key, value in fields.items())


@pytest_asyncio.fixture
async def events(server: RunningServer) -> AsyncIterator[EventWatch]:
    watch = EventWatch(services_of(server))
    yield watch
    watch.close()


@dataclass
class StateFeed:
    """States for one robot with strictly increasing timestamps."""

    x: float = 0.0
    y: float = 0.0
    status: RobotStatus = RobotStatus.IDLE
    battery: float | None = 80.0
    last: datetime | None = None

    def next(self, **changes: Any) -> RobotState:
        for name, value in changes.items():
            setattr(self, name, value)
        now = utcnow()
        if self.last is not None and now <= self.last:
            now = self.last + timedelta(microseconds=1)
        self.last = now
        return RobotState(
            timestamp=now,
            position=Position(x=self.x, y=self.y),
            orientation=Orientation(yaw=0.0),
            velocity=Velocity(linear=0.0),
            status=self.status,
            battery=self.battery,
        )


@dataclass
class RecordingRobot:
    """A command handler that records each command and returns ``outcome``."""

    outcome: tuple[str, str | None] = ("succeeded", None)
    received: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event | None = None
    _arrived: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def __call__(self, command: dict[str, Any]) -> tuple[str, str | None]:
        self.received.append(command)
        self._arrived.put_nowait(command)
        if self.release is not None:
            await self.release.wait()
        return self.outcome

    async def next_command(self) -> dict[str, Any]:
        """Wait up to WAIT_S seconds for the next command the robot receives."""
        return await asyncio.wait_for(self._arrived.get(), WAIT_S)


async def connect(
    server: RunningServer,
    robot_id: str,
    handler: Callable[..., Any] | None = None,
    feed: StateFeed | None = None,
) -> RobotClient:
    """Connect a robot client and, with ``feed``, report one stored state."""
    client = RobotClient(server.ws_url, robot_id, on_command=handler, max_backoff_s=0.2)
    await client.start()
    if feed is not None:
        await client.send_state(feed.next())
        await client.flush(WAIT_S)
    return client


async def register_robot(server: RunningServer, robot_id: str) -> None:
    """Connect a robot once and disconnect it, so fleethub stores the robot."""
    watch = EventWatch(services_of(server))
    client = await connect(server, robot_id)
    await client.close()
    await watch.wait_for("robot_disconnected", robot_id=robot_id)
    watch.close()


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
