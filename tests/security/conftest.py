"""A running server with authentication on, and clients for each role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from auth_helpers import api_key_headers
from fleethub.cli.server import RunningServer, running_server
from security.support import secure_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    # Tests here send bursts with one key; the rate-limit tests set their own limits.
    settings = secure_settings(tmp_path, rate_limit_api="1000/second")
    async with running_server(settings, migrate_schema=True) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        yield client


@pytest.fixture
async def admin(server: RunningServer) -> dict[str, str]:
    return await api_key_headers(server, "admin")


@pytest.fixture
async def operator(server: RunningServer) -> dict[str, str]:
    return await api_key_headers(server, "operator")


@pytest.fixture
async def viewer(server: RunningServer) -> dict[str, str]:
    return await api_key_headers(server, "viewer")
