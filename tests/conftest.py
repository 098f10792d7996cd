"""Fixtures shared by every test folder.

A real fleethub server in the test's event loop, a PostgreSQL database and a
Redis key prefix of the test's own.

``server`` listens on 127.0.0.1 with a port chosen by the OS and a fresh SQLite
file under ``tmp_path``. A test module that needs other settings overrides the
``settings`` fixture, for example::

    @pytest.fixture
    def settings(tmp_path):
        return make_settings(tmp_path, max_frame_bytes=2048)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest

from fleethub.cli.server import RunningServer, running_server
from fleethub.settings import Settings
from servers import redis_namespace, require_postgres, temporary_database
from support import RobotSocket, make_settings, open_robot_socket

OpenRobot = Callable[..., AbstractAsyncContextManager[RobotSocket]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for one test server: loopback, port 0, SQLite under ``tmp_path``."""
    return make_settings(tmp_path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    """A fleethub server running in this test's event loop, migrated and listening."""
    async with running_server(settings, migrate_schema=True) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the test server's REST API."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def open_robot(server: RunningServer) -> OpenRobot:
    """Open a raw robot WebSocket: ``async with open_robot("r1") as robot: ...``.

    ``robot_path`` is placed in the URL unchanged, so a test can pass a
    percent-encoded id. By default the ``welcome`` frame is consumed first.
    """

    def opener(
        robot_path: str, *, expect_welcome: bool = True
    ) -> AbstractAsyncContextManager[RobotSocket]:
        return open_robot_socket(
            server.ws_url, robot_path, expect_welcome=expect_welcome
        )

    return opener


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database of this test, dropped afterwards."""
    require_postgres()
    async with temporary_database() as url:
        yield url


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    async with redis_namespace() as prefix:
        yield prefix


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """Yield a fresh database URL, once on SQLite and once on PostgreSQL.

    PostgreSQL is skipped when it is not reachable, and fails the test when CI
    is set.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}"
        return
    require_postgres()
    async with temporary_database() as url:
        yield url


def pytest_configure(config: pytest.Config) -> None:
    # Tests that are not about security run their loopback servers without
    # credentials; security tests pass auth_enabled=True and use auth_helpers.
    os.environ.setdefault("FLEETHUB_AUTH_ENABLED", "false")
