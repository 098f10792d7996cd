"""Rate limits per API key and per robot, in one process and across two."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from auth_helpers import api_key, api_key_headers, robot_headers
from faults.private_servers import private_redis
from fleethub.cli.server import running_server
from fleethub.client.robot import RobotClient
from fleethub.models import utcnow
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.security.principals import Principal, Role
from fleethub.security.ratelimit import (
    RateLimiter,
    StorageFailureLog,
    build_rate_limiter,
)
from fleethub.settings import Settings
from security.support import redis_url_or_skip, secure_settings, unique_prefix
from servers import free_port


def state(seconds_ago: float) -> RobotState:
    return RobotState(
        timestamp=utcnow() - timedelta(seconds=seconds_ago),
        position=Position(x=0, y=0),
        orientation=Orientation(yaw=0),
        velocity=Velocity(linear=0),
        status=RobotStatus.IDLE,
    )


async def test_http_rate_limit_per_key(tmp_path: Path) -> None:
    """The request past the limit gets 429 with Retry-After; other keys go on."""
    settings = secure_settings(tmp_path, rate_limit_api="3/minute")
    async with running_server(settings, migrate_schema=True) as server:
        first = await api_key_headers(server, "viewer")
        second = await api_key_headers(server, "viewer")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            statuses = [
                (await http.get("/api/robots", headers=first)).status_code
                for _ in range(3)
            ]
            limited = await http.get("/api/robots", headers=first)
            other = await http.get("/api/robots", headers=second)
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert 0 < limited.json()["details"]["retry_after_s"] <= 60
    assert other.status_code == 200


async def test_websocket_messages_rate_limited_without_loss(tmp_path: Path) -> None:
    """Past the robot's limit it gets rate_limited frames and every state is stored."""
    settings = secure_settings(tmp_path, rate_limit_robot="4/second")
    async with running_server(settings, migrate_schema=True) as server:
        headers = await robot_headers(server, "fast-robot")
        async with RobotClient(server.ws_url, "fast-robot", headers=headers) as client:
            for index in range(8):
                await client.send_state(state(seconds_ago=10 - index))
            await client.flush(30)
        stored = await server.app.state.services.storage.count_telemetry("fast-robot")
    limited = [frame for frame in client.errors if frame.code == "rate_limited"]
    assert limited
    assert 0 < limited[0].details["retry_after_s"] <= 1
    assert limited[0].retryable
    assert client.stats.acked == 8
    assert client.stats.rejected == {}
    assert stored == 8


async def test_rate_limit_shared_across_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two servers on one Redis count one key's requests against one budget."""
    prefix = unique_prefix()
    # PostgreSQL, because two servers may not share a SQLite file.
    settings = secure_settings(
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_url_or_skip(),
        rate_limit_key_prefix=prefix,
        rate_limit_api="4/minute",
    )
    try:
        async with (
            running_server(settings, migrate_schema=True) as first,
            running_server(settings) as second,
        ):
            headers = {"X-API-Key": await api_key(first, "viewer")}
            statuses = []
            for server in (first, second, first, second, first, second):
                async with httpx.AsyncClient(base_url=server.http_url) as http:
                    statuses.append(
                        (await http.get("/api/robots", headers=headers)).status_code
                    )
    finally:
        await _delete_keys(settings.redis_url, prefix)
    assert statuses == [200, 200, 200, 200, 429, 429]


async def _delete_keys(url: str | None, prefix: str) -> None:
    assert url is not None
    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        assert keys, "the limiter stored no counters under the test's prefix"
        await client.delete(*keys)
    finally:
        await client.aclose()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def storage_lines(
    caplog: pytest.LogCaptureFixture, message: str
) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == message]


def api_principal() -> Principal:
    return Principal(kind="api_key", subject="k", role=Role.VIEWER)


async def test_unreachable_redis_lets_requests_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When Redis is down, every hit is allowed and counted, and logged once."""
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_api="1/minute"
    )
    limiter = build_rate_limiter(settings)
    try:
        with caplog.at_level(logging.INFO, logger="fleethub.security.ratelimit"):
            waits = [await limiter.hit(api_principal()) for _ in range(50)]
    finally:
        await limiter.close()
    assert waits == [None] * 50
    failed = storage_lines(caplog, "rate_limit_storage_failed")
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING
    assert failed[0].error
    assert failed[0].failed_open == 1
    assert limiter.failure_log.failed_open_total == 50


async def test_storage_failure_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """During a long outage a line is logged per interval with the count since."""
    clock = FakeClock()
    failure_log = StorageFailureLog(interval_s=30.0, clock=clock)
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    limiter = build_rate_limiter(settings, failure_log)
    try:
        with caplog.at_level(logging.INFO, logger="fleethub.security.ratelimit"):
            for now in (0.0, 10.0, 29.9, 30.0, 45.0, 59.9, 60.0):
                clock.now = now
                assert await limiter.hit(api_principal()) is None
    finally:
        await limiter.close()
    failed = storage_lines(caplog, "rate_limit_storage_failed")
    assert [record.failed_open for record in failed] == [1, 3, 3]
    assert [record.outage_failed_open for record in failed] == [1, 4, 7]
    assert failure_log.failed_open_total == 7


async def test_storage_recovery_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Recovery is logged once with the outage's count, and a new outage logs again."""
    async with private_redis() as server:
        settings = Settings(redis_url=server.url, rate_limit_api="1000/minute")
        limiter = build_rate_limiter(settings)
        try:
            with caplog.at_level(logging.INFO, logger="fleethub.security.ratelimit"):
                assert await limiter.hit(api_principal()) is None

                await server.stop()
                for _ in range(20):
                    assert await limiter.hit(api_principal()) is None

                await server.start()
                await wait_until_limiter_recovers(limiter)
                for _ in range(5):
                    assert await limiter.hit(api_principal()) is None
                recovered = storage_lines(caplog, "rate_limit_storage_recovered")
                failed_first = storage_lines(caplog, "rate_limit_storage_failed")

                await server.stop()
                for _ in range(3):
                    assert await limiter.hit(api_principal()) is None
        finally:
            await limiter.close()
    assert len(failed_first) == 1
    assert len(recovered) == 1
    assert recovered[0].levelno == logging.INFO

    # The first hit after the restart may still fail on a stale connection.
    outage_total = recovered[0].failed_open
    assert outage_total >= 20
    failed = storage_lines(caplog, "rate_limit_storage_failed")
    assert len(failed) == 2
    assert failed[1].outage_failed_open == 1
    assert limiter.failure_log.failed_open_total == outage_total + 3


async def wait_until_limiter_recovers(limiter: RateLimiter) -> None:
    """Hit the limiter until a hit reaches Redis again, within a deadline."""
    async with asyncio.timeout(10):
        while limiter.failure_log.failing:
            assert await limiter.hit(api_principal()) is None
            await asyncio.sleep(0.05)


async def test_failed_credentials_rate_limited_per_address(tmp_path: Path) -> None:
    """Repeated bad credentials from one address get 429 instead of 401."""
    settings = secure_settings(tmp_path, rate_limit_api="3/minute")
    bad = {"Authorization": "Bearer fhk_000000000000_" + "A" * 43}
    async with running_server(settings, migrate_schema=True) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            statuses = [
                (await http.get("/api/robots", headers=bad)).status_code
                for _ in range(4)
            ]
            missing = await http.get("/api/robots")
    assert statuses == [401, 401, 401, 429]
    assert missing.status_code == 429
    assert "retry-after" in missing.headers
