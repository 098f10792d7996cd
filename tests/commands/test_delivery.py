"""Command delivery over real sockets: at once, queued, ordered, resent."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from fleethub.cli.server import RunningServer
from fleethub.client.robot import RobotClient
from tests.lifecycle_support import (
    WAIT_S,
    EventWatch,
    RecordingRobot,
    StateFeed,
    connect,
    later,
    register_robot,
    services_of,
)


async def receive(socket: websockets.ClientConnection) -> dict:
    """Return the next frame from the server, failing after WAIT_S seconds."""
    return json.loads(await asyncio.wait_for(socket.recv(), WAIT_S))


async def post_command(http: httpx.AsyncClient, robot_id: str, **body: object) -> dict:
    response = await http.post(f"/api/robots/{robot_id}/commands", json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_connected_robot_gets_command_at_once(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A command for a connected robot is delivered, acknowledged and succeeds."""
    robot = RecordingRobot()
    client = await connect(server, "r1", robot, StateFeed())
    created = await post_command(http, "r1", type="go_to", params={"x": 1, "y": 2})
    command_id = created["command_id"]

    received = await robot.next_command()
    await events.wait_for("command_succeeded", command_id=command_id)
    await client.close()

    assert received["command_id"] == command_id
    assert received["params"] == {"x": 1, "y": 2}
    stored = (await http.get(f"/api/commands/{command_id}")).json()
    assert stored["status"] == "succeeded"
    assert stored["attempts"] == 1
    path = [(t["from_status"], t["to_status"]) for t in stored["transitions"]]
    assert path == [
        (None, "queued"),
        ("queued", "sent"),
        ("sent", "acknowledged"),
        ("acknowledged", "succeeded"),
    ]
    assert all(t["at"] for t in stored["transitions"])
    published = events.types(command_id=command_id)
    assert published == [
        "command_queued",
        "command_sent",
        "command_acknowledged",
        "command_succeeded",
    ]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_offline_robot_gets_queue_in_order(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Queued commands arrive on reconnect by priority, then creation order."""
    await register_robot(server, "r1")
    posted = []
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", 9)]:
        command = await post_command(
            http, "r1", type="note", params={"name": name}, priority=priority
        )
        assert command["status"] == "queued"
        posted.append(command)

    robot = RecordingRobot()
    client = await connect(server, "r1", robot)
    names = [(await robot.next_command())["params"]["name"] for _ in posted]
    await client.close()

    assert names == ["e", "b", "d", "a", "c"]


async def test_expired_command_is_never_delivered(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A queued command past its time to live expires and is never sent."""
    await register_robot(server, "r1")
    short = await post_command(http, "r1", type="note", params={"n": 1}, ttl_s=30)
    kept = await post_command(http, "r1", type="note", params={"n": 2})

    await services_of(server).lifecycle.run_sweeps(later(60))
    robot = RecordingRobot()
    client = await connect(server, "r1", robot)
    first = await robot.next_command()
    await events.wait_for("command_succeeded", command_id=kept["command_id"])
    await client.close()

    assert first["command_id"] == kept["command_id"]
    assert [c["command_id"] for c in robot.received] == [kept["command_id"]]
    stored = (await http.get(f"/api/commands/{short['command_id']}")).json()
    assert stored["status"] == "expired"
    assert stored["attempts"] == 0
    assert [t["to_status"] for t in stored["transitions"]] == ["queued", "expired"]
    assert "command_expired" in events.types(command_id=short["command_id"])


async def test_sweep_delivers_command_stranded_in_queue(
    server: RunningServer, events: EventWatch
) -> None:
    """A queued command stranded by a lost forward goes out on the next sweep."""
    services = services_of(server)
    robot = RecordingRobot()
    client = await connect(server, "r1", robot)
    lost_route = services.commands.router

    class Unreachable:
        def holds(self, robot_id: str) -> bool:
            return lost_route.holds(robot_id)

        async def deliver(self, robot_id: str, payload: dict) -> bool:
            return False

    services.commands.router = Unreachable()
    command, _ = await services.commands.submit("r1", "note", {})
    services.commands.router = lost_route
    assert robot.received == []

    await services.lifecycle.run_sweeps(later(1))
    delivered = await robot.next_command()
    await events.wait_for("command_succeeded", command_id=command.command_id)
    await client.close()

    assert command.status == "queued"
    assert delivered["command_id"] == command.command_id


async def test_unacknowledged_command_resent_after_reconnect(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A command lost with its connection is resent with the same id."""
    await register_robot(server, "r1")
    url = f"{server.ws_url}/ws/robots/r1"
    async with websockets.connect(url) as socket:
        assert (await receive(socket))["type"] == "welcome"
        command = await post_command(http, "r1", type="note", params={})
        first = await receive(socket)
    assert first["data"]["command_id"] == command["command_id"]
    await events.wait_for("robot_disconnected", robot_id="r1")

    await services_of(server).lifecycle.run_sweeps(later(11))
    requeued = (await http.get(f"/api/commands/{command['command_id']}")).json()
    async with websockets.connect(url) as socket:
        assert (await receive(socket))["type"] == "welcome"
        again = await receive(socket)
        for status in ("acknowledged", "succeeded"):
            response = {"command_id": command["command_id"], "status": status}
            await socket.send(
                json.dumps({"type": "command_response", "data": response})
            )
        await events.wait_for("command_succeeded", command_id=command["command_id"])

    assert requeued["status"] == "queued"
    assert "queued for resending" in requeued["message"]
    assert again["data"]["command_id"] == command["command_id"]
    final = (await http.get(f"/api/commands/{command['command_id']}")).json()
    assert final["status"] == "succeeded"
    assert final["attempts"] == 2
    path = [t["to_status"] for t in final["transitions"]]
    assert path == ["queued", "sent", "queued", "sent", "acknowledged", "succeeded"]


async def test_command_fails_after_max_attempts(
    server: RunningServer, http: httpx.AsyncClient, events: EventWatch
) -> None:
    """A command never acknowledged within the allowed sends is marked failed."""
    await register_robot(server, "r1")
    command = await post_command(http, "r1", type="note", params={})
    lifecycle = services_of(server).lifecycle
    url = f"{server.ws_url}/ws/robots/r1"
    max_attempts = services_of(server).settings.command_max_attempts
    events.forget()
    for attempt in range(1, max_attempts + 1):
        async with websockets.connect(url) as socket:
            assert (await receive(socket))["type"] == "welcome"
            frame = await receive(socket)
            assert frame["data"]["command_id"] == command["command_id"]
            await events.wait_for("command_sent", command_id=command["command_id"])
        await events.wait_for("robot_disconnected", robot_id="r1")
        events.forget()
        await lifecycle.run_sweeps(later(11 * attempt))

    stored = (await http.get(f"/api/commands/{command['command_id']}")).json()
    assert stored["status"] == "failed"
    assert stored["attempts"] == max_attempts
    assert "Not acknowledged" in stored["message"]


async def test_robot_client_drops_duplicate_command() -> None:
    """The robot client replies to a resent command id without running it again."""
    robot = RecordingRobot()
    client = RobotClient("ws://127.0.0.1:9", "r1", on_command=robot)
    sent: list[bytes] = []

    async def capture(frame: bytes) -> None:
        sent.append(frame)

    client._send = capture  # type: ignore[method-assign]
    payload = {"command_id": "c1", "type": "note", "params": {}}
    await client._run_command(payload)
    await client._run_command(payload)

    assert len(robot.received) == 1
    assert client.stats.duplicate_commands == 1
    statuses = [json.loads(frame)["data"]["status"] for frame in sent]
    assert statuses == ["acknowledged", "succeeded", "succeeded"]
