"""Two ``fleethub serve`` processes sharing PostgreSQL and Redis form one fleet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
import websockets
from processes import ServeProcess, make_state, serve_processes

from fleethub.client.robot import RobotClient
from fleethub.storage import migrate
from fleethub.storage.sql import create_engine
from servers import REDIS_URL, redis_namespace, require_postgres, temporary_database

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    """Two servers on one fresh database and Redis prefix, shared by this module.

    Each test uses its own robot ids, so sharing the servers keeps the tests
    independent while paying the start-up cost once.
    """
    require_postgres()
    async with temporary_database() as url, redis_namespace() as prefix:
        engine = create_engine(url)
        await migrate.upgrade(engine)
        await engine.dispose()
        tmp_path = tmp_path_factory.mktemp("cluster")
        settings = {"database_url": url, "redis_url": REDIS_URL, "redis_prefix": prefix}
        async with serve_processes(tmp_path, 2, **settings) as (first, second):
            yield first, second


async def robots_on(server: ServeProcess) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.get("/api/robots")
        response.raise_for_status()
        return response.json()


async def robot_on(server: ServeProcess, robot_id: str) -> dict[str, Any]:
    (robot,) = [r for r in await robots_on(server) if r["robot_id"] == robot_id]
    return robot


async def wait_for_online(
    server: ServeProcess, robot_id: str, node_id: str | None = None
) -> None:
    """Poll ``/api/robots`` until the robot is online (on ``node_id`` if given)."""
    async with asyncio.timeout(10):
        while True:
            for robot in await robots_on(server):
                online = robot["robot_id"] == robot_id and robot["online"]
                if online and node_id in (None, robot["node_id"]):
                    return
            await asyncio.sleep(0.05)


async def test_command_routed_across_processes(
    cluster: tuple[ServeProcess, ServeProcess],
) -> None:
    """A robot on the first process gets a command sent through the second."""
    first, second = cluster
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_command(command: dict[str, Any]) -> tuple[str, str | None]:
        await received.put(command)
        return "succeeded", None

    async with RobotClient(first.ws_url, "routed", on_command=on_command) as robot:
        await robot.send_state(make_state(0))
        await robot.flush(10)
        await wait_for_online(first, "routed")
        await wait_for_online(second, "routed")
        async with httpx.AsyncClient(base_url=second.http_url) as client:
            response = await client.post(
                "/api/robots/routed/commands",
                json={"type": "dock", "params": {"at": "A"}},
            )
        assert response.status_code == 202, response.text
        command = await asyncio.wait_for(received.get(), 10)
        assert command["type"] == "dock"
        assert command["params"] == {"at": "A"}
        assert command["command_id"] == response.json()["command_id"]


async def test_command_for_offline_robot_waits(
    cluster: tuple[ServeProcess, ServeProcess],
) -> None:
    """A command queued through one process reaches the robot when it reconnects."""
    first, second = cluster
    async with RobotClient(first.ws_url, "gone") as robot:
        await robot.send_state(make_state(0))
        await robot.flush(10)
    async with httpx.AsyncClient(base_url=second.http_url) as client:
        response = await client.post("/api/robots/gone/commands", json={"type": "dock"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"

    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handle(command: dict[str, Any]) -> tuple[str, str | None]:
        await received.put(command)
        return "succeeded", None

    async with RobotClient(first.ws_url, "gone", on_command=handle):
        command = await asyncio.wait_for(received.get(), 10)
    assert command["command_id"] == response.json()["command_id"]


async def test_reconnect_to_other_process(
    cluster: tuple[ServeProcess, ServeProcess],
) -> None:
    """A robot that moves to the other process stays one robot and loses no state."""
    first, second = cluster
    start = datetime.now(UTC) - timedelta(seconds=30)
    async with RobotClient(first.ws_url, "moved") as robot:
        for index in range(20):
            await robot.send_state(make_state(index, start))
        await robot.flush(10)
        assert robot.stats.rejected == {}
    async with RobotClient(second.ws_url, "moved") as robot:
        for index in range(20, 40):
            await robot.send_state(make_state(index, start))
        await robot.flush(10)
        assert robot.stats.rejected == {}
        assert robot.stats.acked == 20
        await wait_for_online(second, "moved")
        holder = (await robot_on(second, "moved"))["node_id"]
        await wait_for_online(first, "moved", holder)
        listed = [robot["robot_id"] for robot in await robots_on(first)]
        assert listed.count("moved") == 1
    async with httpx.AsyncClient(base_url=second.http_url) as client:
        response = await client.get(
            "/api/robots/moved/telemetry", params={"limit": 100}
        )
    stored = [item["x"] for item in response.json()["items"]]
    assert stored == [index / 10 for index in range(40)]


async def test_stale_link_closed_on_takeover(
    cluster: tuple[ServeProcess, ServeProcess],
) -> None:
    """The old socket on the first process closes when the robot moves."""
    first, second = cluster
    async with websockets.connect(f"{first.ws_url}/ws/robots/stale") as old_socket:
        welcome = msgspec.json.decode(await asyncio.wait_for(old_socket.recv(), 10))
        assert welcome["type"] == "welcome"
        async with RobotClient(second.ws_url, "stale") as robot:
            await robot.send_state(make_state(0))
            await robot.flush(10)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(old_socket.recv(), 10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4001
            await wait_for_online(
                first, "stale", (await robot_on(second, "stale"))["node_id"]
            )


async def test_fleet_stream_sees_other_process(
    cluster: tuple[ServeProcess, ServeProcess],
) -> None:
    """A /ws/fleet subscriber on the second process sees the first's robot."""
    first, second = cluster
    url = f"{second.ws_url}/ws/fleet?robot_ids=streamed&events=false"
    async with websockets.connect(url) as subscriber:
        subscribed = json.loads(await asyncio.wait_for(subscriber.recv(), 10))
        assert subscribed["type"] == "subscribed"
        async with RobotClient(first.ws_url, "streamed") as robot:
            await robot.send_state(make_state(0))
            await robot.flush(10)
            async with asyncio.timeout(10):
                while True:
                    frame = json.loads(await subscriber.recv())
                    if frame["type"] == "state_update":
                        break

    assert frame["robot_id"] == "streamed"
    assert frame["data"]["position"]["x"] == 0.0
