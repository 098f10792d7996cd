"""/readyz as dependencies go away and come back."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest
import redis.asyncio

from fleethub.cli.server import running_server
from fleethub.client.robot import RobotClient
from fleethub.settings import Settings

from .conftest import (
    WAIT_TIMEOUT_S,
    make_states,
    sample,
    scrape,
    set_database_reachable,
    sqlite_settings,
    wait_for,
)

ERROR_KEYS = {"error", "message", "details"}


async def test_readiness_follows_postgres(pg_database: str) -> None:
    """Readiness is 503 naming the database while it refuses connections, then 200."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_database}",
        ready_timeout_s=5.0,
    )
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == "ok"

        await set_database_reachable(pg_database, False)

        async def not_ready() -> bool:
            return (await http.get("/readyz")).status_code == 503

        await wait_for(not_ready)
        body = (await http.get("/readyz")).json()
        assert set(body) == ERROR_KEYS
        assert body["error"] == "not_ready"
        assert body["details"]["failing"] == ["database"]
        assert "database" in body["message"]
        assert body["details"]["checks"]["telemetry_writer"] == "ok"

        robots = await http.get("/api/robots")
        assert robots.status_code == 503
        assert set(robots.json()) == ERROR_KEYS
        assert robots.json()["error"] == "storage_unavailable"
        fleet = await http.get("/api/fleet/health")
        assert fleet.status_code == 503
        assert fleet.json()["error"] == "storage_unavailable"
        openapi = (await http.get("/openapi.json")).json()
        assert "503" in openapi["paths"]["/api/robots"]["get"]["responses"]

        await set_database_reachable(pg_database, True)

        async def ready_again() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_for(ready_again)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_start_fails_without_redis(tmp_path: Path) -> None:
    """A Redis URL with no server listening stops the server from starting."""
    settings = sqlite_settings(
        tmp_path, redis_url=f"redis://127.0.0.1:{_closed_port()}/0", ready_timeout_s=2.0
    )
    with pytest.raises((OSError, TimeoutError, RuntimeError)):
        async with running_server(settings, migrate_schema=True):
            pass


async def test_readiness_passes_with_redis(tmp_path: Path) -> None:
    """A reachable Redis passes its readiness check."""
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at 127.0.0.1:6379 is required in CI: {exc}")
        pytest.skip(f"Redis at 127.0.0.1:6379 is not reachable: {exc}")
    finally:
        await client.aclose()
    settings = sqlite_settings(tmp_path, redis_url="redis://127.0.0.1:6379/0")
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "telemetry_writer": "ok",
    }


async def test_readiness_accepts_plugged_check(tmp_path: Path) -> None:
    """A check registered by another feature is run and named when it fails."""
    async with (
        running_server(sqlite_settings(tmp_path), migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):

        async def broker_down() -> None:
            raise ConnectionRefusedError("broker refused")

        server.app.state.services.observability.readiness.add("mqtt", broker_down)
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["details"]["checks"]["mqtt"] == "unavailable"
    assert response.json()["details"]["failing"] == ["mqtt"]


async def test_readiness_names_stalled_writer(pg_database: str) -> None:
    """A writer retrying against a lost database fails readiness until it recovers."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_database}",
    )
    async with (
        running_server(settings, migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
        RobotClient(server.ws_url, "stalled-bot") as robot,
    ):
        writer = server.app.state.services.telemetry_writer
        await set_database_reachable(pg_database, False)
        await robot.send_state(make_states(1)[0])

        async def writer_failing() -> bool:
            return not writer.healthy

        await wait_for(writer_failing)
        body = (await http.get("/readyz")).json()
        samples = await scrape(http)

        await set_database_reachable(pg_database, True)
        await robot.flush(WAIT_TIMEOUT_S)
        recovered = await http.get("/readyz")

    assert body["details"]["failing"] == ["database", "telemetry_writer"]
    assert body["details"]["checks"]["telemetry_writer"] == (
        "retrying writes after a storage failure"
    )
    assert sample(samples, "fleethub_writer_healthy", writer="telemetry") == 0
    assert sample(samples, "fleethub_writer_retries_total", writer="telemetry") >= 1
    assert sample(samples, "fleethub_ingest_queue_depth") == 1
    assert recovered.status_code == 200
