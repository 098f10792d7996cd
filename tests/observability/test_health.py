"""Robot health as a robot sends states, misbehaves and disconnects."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.models import utcnow
from fleethub.protocol import (
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    StateUpdate,
    Velocity,
    encode,
)

from .conftest import (
    WAIT_TIMEOUT_S,
    created_pg_database,
    make_states,
    sqlite_settings,
    wait_for,
)

ROBOT = "healthbot"
STATES = 30
BAD_FRAMES = 5


@pytest.fixture(params=["sqlite", "postgresql"])
async def health_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RunningServer]:
    """Run a server with low health thresholds on SQLite and on PostgreSQL."""
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, Any] = {}
        if request.param == "postgresql":
            name = await stack.enter_async_context(created_pg_database())
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
            overrides["database_url"] = url
        settings = sqlite_settings(
            tmp_path,
            **overrides,
            health_errors_warning=3,
            health_errors_unhealthy=50,
            health_uptime_warning_ratio=0.5,
            health_battery_drain_warning_percent_per_h=100.0,
        )
        yield await stack.enter_async_context(
            running_server(settings, migrate_schema=True)
        )


async def _health(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(f"/api/robots/{ROBOT}/health")
    assert response.status_code == 200, response.text
    return response.json()


async def _wait_health(http: httpx.AsyncClient, **expected: Any) -> dict[str, Any]:
    """Poll until the health report has the ``expected`` values; return it."""
    report: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal report
        report = await _health(http)
        return all(report[key] == value for key, value in expected.items())

    try:
        await wait_for(matches)
    except TimeoutError:
        pytest.fail(f"health never matched {expected}: {report}")
    return report


def _error_state(seq: int) -> str:
    state = RobotState(
        timestamp=utcnow(),
        position=Position(x=0.0, y=0.0),
        orientation=Orientation(yaw=0.0),
        velocity=Velocity(linear=0.0),
        status=RobotStatus.ERROR,
        battery=80.0,
        error_message="wheel stuck",
    )
    return encode(StateUpdate(seq=seq, data=state)).decode()


async def _misbehave(server: RunningServer, http: httpx.AsyncClient) -> dict[str, Any]:
    """Send bad frames and a fault state on a second connection; return health then."""
    async with websockets.connect(f"{server.ws_url}/ws/robots/{ROBOT}") as socket:
        await socket.recv()
        for _ in range(BAD_FRAMES):
            await socket.send("{")
        for _ in range(BAD_FRAMES):
            assert json.loads(await socket.recv())["type"] == "error"
        await socket.send(_error_state(1))
        assert json.loads(await socket.recv()) == {"type": "ack", "seq": 1}
        return await _wait_health(http, connections=2, error_total=BAD_FRAMES + 1)


async def test_health_follows_errors_and_disconnects(
    health_server: RunningServer,
) -> None:
    """Health is healthy while streaming, unhealthy with faults, offline after close."""
    server = health_server
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        async with RobotClient(server.ws_url, ROBOT) as client:
            for state in make_states(STATES):
                await client.send_state(state)
            await client.flush(WAIT_TIMEOUT_S)
            streaming = await _wait_health(http, connections=1)

        offline = await _wait_health(http, online=False)
        misbehaving = await _misbehave(server, http)
        after = await _wait_health(http, online=False, connections=2)

    assert streaming["status"] == "healthy", streaming["reasons"]
    assert streaming["online"] is True
    assert streaming["message_rate_per_s"] == pytest.approx(STATES / 60)
    assert streaming["battery_trend_percent_per_h"] == pytest.approx(-36.0, rel=1e-3)
    assert streaming["errors"] == {}
    assert offline["status"] == "unhealthy"
    assert "offline" in offline["reasons"]
    assert offline["uptime_s"] > 0
    assert misbehaving["online"] is True
    assert misbehaving["errors"] == {"invalid_json": BAD_FRAMES, "robot_error": 1}
    assert misbehaving["status"] == "unhealthy"
    assert "robot reports status error" in misbehaving["reasons"]
    assert f"{BAD_FRAMES + 1} errors in the window" in misbehaving["reasons"]
    assert after["status"] == "unhealthy"
    assert after["uptime_ratio"] < 1.0


async def test_fleet_health_counts_statuses(health_server: RunningServer) -> None:
    """The fleet report lists each robot and counts them by status."""
    server = health_server
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        async with RobotClient(server.ws_url, "online-bot") as client:
            await client.send_state(make_states(1)[0])
            await client.flush(WAIT_TIMEOUT_S)
            services = server.app.state.services
            await services.storage.ensure_robot("parked-bot", utcnow())
            await services.event_writer.wait_idle(WAIT_TIMEOUT_S)
            response = await http.get("/api/fleet/health")

    assert response.status_code == 200
    body = response.json()
    statuses = {robot["robot_id"]: robot["status"] for robot in body["robots"]}
    assert statuses == {"online-bot": "healthy", "parked-bot": "unhealthy"}
    assert body["counts"] == {"healthy": 1, "warning": 0, "unhealthy": 1}
    assert body["status"] == "unhealthy"


async def test_unknown_robot_health_is_404(health_server: RunningServer) -> None:
    """Health of a robot never seen is a 404 with the error body."""
    async with httpx.AsyncClient(base_url=health_server.http_url) as http:
        response = await http.get("/api/robots/ghost/health")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
