"""Outages of PostgreSQL and Redis while a robot streams.

Each test runs its own server (a private PostgreSQL cluster or redis-server
on a free port), so stopping it never disturbs the shared ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
from private_servers import private_postgres, private_redis
from sqlalchemy import text

from fleethub.bus.base import STATES
from fleethub.bus.redis import RedisBus
from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.settings import Settings
from servers import temporary_database
from storage.test_postgres import TERMINATE_COPY_BACKEND

START = datetime.now(UTC) - timedelta(minutes=5)


def state(index: int) -> RobotState:
    return RobotState(
        timestamp=START + timedelta(seconds=index / 10),
        position=Position(x=float(index), y=0.0),
        orientation=Orientation(yaw=0.0),
        velocity=Velocity(linear=1.0),
        status=RobotStatus.MOVING,
        battery=80.0,
    )


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 20
) -> None:
    """Poll ``condition`` every 50 ms until it holds, failing after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def readiness(server: RunningServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.get("/readyz")
    body = response.json()
    checks = body["checks"] if "checks" in body else body["details"]["checks"]
    return {"status_code": response.status_code, "checks": checks}


async def test_postgres_restart_loses_no_acknowledged_row() -> None:
    """Rows wait in the writer while PostgreSQL is down and are all stored after."""
    with private_postgres() as postgres:
        async with temporary_database("127.0.0.1", postgres.port) as url:
            settings = Settings(
                database_url=url,
                port=0,
                writer_flush_interval_s=0.02,
                database_pool_timeout_s=2.0,
            )
            async with running_server(settings, migrate_schema=True) as server:
                services = server.app.state.services
                writer = services.telemetry_writer
                async with RobotClient(server.ws_url, "r1") as robot:
                    for index in range(50):
                        await robot.send_state(state(index))
                    await robot.flush(10)
                    await asyncio.to_thread(postgres.stop)

                    for index in range(50, 100):
                        await robot.send_state(state(index))

                    async def retried() -> bool:
                        return writer.stats.retries > 0

                    await wait_until(retried)
                    # Nothing sent during the outage is acknowledged yet.
                    assert robot.stats.acked == 50
                    assert robot.in_flight == 50
                    ready = await readiness(server)
                    assert ready["status_code"] == 503
                    assert ready["checks"]["database"] != "ok"

                    await asyncio.to_thread(postgres.start)
                    await robot.flush(20)
                    assert robot.stats.acked == 100
                    assert robot.stats.rejected == {}
                assert await services.storage.count_telemetry("r1") == 100
                rows = await services.storage.telemetry("r1", None, None, 200)
                assert [row.x for row in rows] == [float(i) for i in range(100)]


async def test_copy_backend_killed_loses_no_row(postgres_url: str) -> None:
    """Killing the COPY connection while a robot streams loses and rejects nothing."""
    settings = Settings(database_url=postgres_url, port=0, writer_flush_interval_s=0.02)
    async with running_server(settings, migrate_schema=True) as server:
        services = server.app.state.services
        copy_connection = services.storage.copy_connection
        async with RobotClient(server.ws_url, "r1") as robot:
            for index in range(50):
                await robot.send_state(state(index))
            await robot.flush(10)
            assert copy_connection.connections_opened == 1

            async with services.storage.engine.connect() as conn:
                ended = await conn.scalar(text(TERMINATE_COPY_BACKEND))
            assert ended == 1
            for index in range(50, 100):
                await robot.send_state(state(index))
            await robot.flush(20)
            assert robot.stats.acked == 100
            assert robot.stats.rejected == {}
        assert copy_connection.connections_opened == 2
        assert services.telemetry_writer.healthy
        rows = await services.storage.telemetry("r1", None, None, 200)
        assert [row.x for row in rows] == [float(i) for i in range(100)]


def sqlite_with_redis(tmp_path: Path, redis_url: str) -> Settings:
    """Settings for a server on a SQLite file with its live state and bus on Redis."""
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'fault.db'}",
        redis_url=redis_url,
        redis_prefix="fault:",
        port=0,
    )


async def test_redis_restart_recovers(tmp_path: Path) -> None:
    """After a Redis restart, readiness, live state and both buses recover."""
    async with private_redis() as redis_server:
        settings = sqlite_with_redis(tmp_path, redis_server.url)
        async with running_server(settings, migrate_schema=True) as server:
            observer = RedisBus(redis_server.url, "fault:", node_id="observer")
            await observer.start()
            watched = observer.subscribe(frozenset({STATES}))
            try:
                await stream_through_restart(server, redis_server, watched)
            finally:
                await observer.close()


async def stream_through_restart(
    server: RunningServer, redis_server: Any, watched: Any
) -> None:
    async with RobotClient(server.ws_url, "r1") as robot:
        await robot.send_state(state(0))
        await robot.flush(10)
        assert (await asyncio.wait_for(watched.get(), 10))[0] == STATES

        await redis_server.stop()
        for index in range(1, 21):
            await robot.send_state(state(index))
        await robot.flush(10)  # storage is up, so the robot is acknowledged

        async def redis_reported_down() -> bool:
            ready = await readiness(server)
            return ready["status_code"] == 503 and ready["checks"]["redis"] != "ok"

        await wait_until(redis_reported_down)

        await redis_server.start()

        async def ready_again() -> bool:
            return (await readiness(server))["status_code"] == 200

        await wait_until(ready_again)
        # Pub/sub drops what is published before a subscriber has subscribed
        # again, and the server may be ready before the observer is, so keep
        # sending states until one published after the restart arrives.
        last_sent = 20

        async def state_after_restart_seen() -> bool:
            nonlocal last_sent
            for _, message in watched.drain():
                if msgspec.json.decode(message)["data"]["position"]["x"] > 20.0:
                    return True
            last_sent += 1
            await robot.send_state(state(last_sent))
            await robot.flush(10)
            return False

        await wait_until(state_after_restart_seen)

        async def listed_online() -> bool:
            async with httpx.AsyncClient(base_url=server.http_url) as client:
                robots = (await client.get("/api/robots")).json()
            newest_x = robots[0]["state"]["position"]["x"]
            return robots[0]["online"] and newest_x == float(last_sent)

        await wait_until(listed_online)
        assert robot.stats.rejected == {}
        assert robot.stats.acked == last_sent + 1


async def test_history_reads_survive_redis_outage(tmp_path: Path) -> None:
    """Telemetry and analytics come from the database, so Redis being down is no 503."""
    async with private_redis() as redis_server:
        settings = sqlite_with_redis(tmp_path, redis_server.url)
        async with running_server(settings, migrate_schema=True) as server:
            async with RobotClient(server.ws_url, "r1") as robot:
                for index in range(5):
                    await robot.send_state(state(index))
                await robot.flush(10)
            await redis_server.stop()

            async with httpx.AsyncClient(base_url=server.http_url) as client:
                live = await client.get("/api/robots/r1/state")
                telemetry = await client.get("/api/robots/r1/telemetry")
                analytics = await client.get("/api/robots/r1/analytics")
                unknown = await client.get("/api/robots/r2/telemetry")

            assert live.status_code == 503
            assert telemetry.status_code == 200, telemetry.text
            assert len(telemetry.json()["items"]) == 5
            assert analytics.status_code == 200, analytics.text
            assert analytics.json()["samples"] == 5
            # An id the database does not know still needs live state to decide.
            assert unknown.status_code == 503
            await redis_server.start()
