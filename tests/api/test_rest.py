"""The REST API over a real server: robots, state, telemetry, events and commands."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.settings import Settings
from support import base_time, iso, make_state, open_robot_socket, wait_for

T0 = base_time()
ERROR_KEYS = {"error", "message", "details"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def store_states(
    open_robot: Any, robot_id: str, count: int, **fields: Any
) -> None:
    """Store ``count`` states one second apart from T0 and wait for the last ack."""
    async with open_robot(robot_id) as robot:
        for seq in range(1, count + 1):
            await robot.send_state(seq, make_state(at(seq - 1), **fields))
        await robot.wait_ack(count)


async def events_stored(server: RunningServer) -> None:
    """Wait until every event emitted so far is written to the database."""
    await server.app.state.services.event_writer.wait_idle(10)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["details"], dict)
    return body


async def test_robots_empty_list(http: httpx.AsyncClient) -> None:
    """A fresh server lists no robots."""
    response = await http.get("/api/robots")

    assert response.status_code == 200
    assert response.json() == []


async def test_robots_list_shows_presence(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A connected robot is listed online with its latest state, offline once gone."""
    async with open_robot("r1") as robot:
        await robot.send_state(1, make_state(at(0), battery=42.0))
        await robot.wait_ack(1)
        robots = (await http.get("/api/robots")).json()

        assert [entry["robot_id"] for entry in robots] == ["r1"]
        assert robots[0]["online"] is True
        assert robots[0]["last_seen"] is not None
        assert robots[0]["state"]["timestamp"] == iso(at(0))
        assert robots[0]["state"]["battery"] == 42.0

    async def offline() -> bool:
        return (await http.get("/api/robots")).json()[0]["online"] is False

    await wait_for(offline)


async def test_state_of_known_robot(open_robot: Any, http: httpx.AsyncClient) -> None:
    """The state endpoint returns the robot's newest accepted state."""
    await store_states(open_robot, "r1", 3)
    response = await http.get("/api/robots/r1/state")

    assert response.status_code == 200
    body = response.json()
    assert body["robot_id"] == "r1"
    assert body["state"]["timestamp"] == iso(at(2))
    assert body["state"]["position"] == {"x": 1.0, "y": 2.0, "z": 0.0}


async def test_state_unknown_robot_404(http: httpx.AsyncClient) -> None:
    """An unknown robot gets 404 with the error body."""
    body = assert_error(await http.get("/api/robots/nobody/state"), 404, "not_found")

    assert body["details"] == {"robot_id": "nobody"}


@pytest.mark.parametrize(
    "robot_path",
    ["bad%20id", "r" * 65, "bad+id", "%C3%A9", "-leading-dash"],
    ids=["space", "too_long", "plus", "unicode", "leading_dash"],
)
async def test_state_invalid_robot_id_400(
    http: httpx.AsyncClient, robot_path: str
) -> None:
    """An invalid robot id gets 400 ``invalid_robot_id`` with the error body."""
    response = await http.get(f"/api/robots/{robot_path}/state")

    assert_error(response, 400, "invalid_robot_id")


async def test_telemetry_pages_walk_all_rows(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """Cursor pages cover every row once, in time order, and the last page ends it."""
    await store_states(open_robot, "r1", 25)
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        response = await http.get("/api/robots/r1/telemetry", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    timestamps = [row["ts"] for page in pages for row in page]
    assert [len(page) for page in pages] == [7, 7, 7, 4]
    assert timestamps == [iso(at(second)) for second in range(25)]


async def test_telemetry_exact_multiple_of_limit(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """When rows fill the last page exactly, the next cursor returns an empty page."""
    await store_states(open_robot, "r1", 4)
    first = (await http.get("/api/robots/r1/telemetry", params={"limit": 4})).json()
    params = {"limit": 4, "cursor": first["next_cursor"]}
    second = (await http.get("/api/robots/r1/telemetry", params=params)).json()

    assert len(first["items"]) == 4
    assert first["next_cursor"] is not None
    assert second["items"] == []
    assert second["next_cursor"] is None


async def test_telemetry_time_range(open_robot: Any, http: httpx.AsyncClient) -> None:
    """The time range keeps rows with start <= ts < end."""
    await store_states(open_robot, "r1", 10)
    params = {"start": iso(at(3)), "end": iso(at(6))}
    body = (await http.get("/api/robots/r1/telemetry", params=params)).json()

    assert [row["ts"] for row in body["items"]] == [iso(at(3)), iso(at(4)), iso(at(5))]


async def test_telemetry_row_fields(open_robot: Any, http: httpx.AsyncClient) -> None:
    """A stored row keeps every field of the state, including the scan."""
    lidar = {"ranges": [0.3, 2.0, 90.0], "range_max": 81.8}
    await store_states(open_robot, "r1", 1, lidar=lidar, battery=None, status="busy")
    row = (await http.get("/api/robots/r1/telemetry")).json()["items"][0]

    assert row["robot_id"] == "r1"
    assert (row["x"], row["y"], row["z"]) == (1.0, 2.0, 0.0)
    assert (row["roll"], row["pitch"], row["yaw"]) == (0.0, 0.0, 0.5)
    assert (row["linear"], row["angular"]) == (0.3, 0.1)
    assert row["battery"] is None
    assert row["status"] == "busy"
    assert row["min_range"] == 0.3
    assert row["lidar_ranges"] == [0.3, 2.0, 90.0]


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        base64.urlsafe_b64encode(b"hello").decode(),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
    ids=["not_base64", "not_a_time", "naive_time", "not_utf8"],
)
async def test_telemetry_invalid_cursor_400(
    open_robot: Any, http: httpx.AsyncClient, cursor: str
) -> None:
    """A cursor that did not come from a previous page gets 400 ``invalid_cursor``."""
    await store_states(open_robot, "r1", 1)
    response = await http.get("/api/robots/r1/telemetry", params={"cursor": cursor})

    assert_error(response, 400, "invalid_cursor")


async def test_telemetry_naive_start_400(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A start time without a time zone gets 400 ``timestamp_missing_timezone``."""
    await store_states(open_robot, "r1", 1)
    params = {"start": "2026-01-01T00:00:00"}
    response = await http.get("/api/robots/r1/telemetry", params=params)

    body = assert_error(response, 400, "timestamp_missing_timezone")
    assert body["details"] == {"parameter": "start"}


@pytest.mark.parametrize(
    "offset_s", [0, -1], ids=["end_equals_start", "end_before_start"]
)
async def test_telemetry_end_not_after_start_400(
    open_robot: Any, http: httpx.AsyncClient, offset_s: int
) -> None:
    """An end time at or before the start time gets 400 ``invalid_time_range``."""
    await store_states(open_robot, "r1", 1)
    params = {"start": iso(at(10)), "end": iso(at(10 + offset_s))}
    response = await http.get("/api/robots/r1/telemetry", params=params)

    assert_error(response, 400, "invalid_time_range")


async def test_telemetry_limit_zero_422(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A limit below 1 is a request validation error with the error body."""
    await store_states(open_robot, "r1", 1)
    response = await http.get("/api/robots/r1/telemetry", params={"limit": 0})

    assert_error(response, 422, "invalid_request")


async def test_telemetry_unknown_robot_404(http: httpx.AsyncClient) -> None:
    """Telemetry of an unknown robot gets 404."""
    assert_error(await http.get("/api/robots/nobody/telemetry"), 404, "not_found")


async def produce_events(open_robot: Any, robot_id: str, start_s: float) -> None:
    """Connect, send a low battery and a near obstacle, then disconnect."""
    async with open_robot(robot_id) as robot:
        lidar = {"ranges": [0.2, 3.0]}
        await robot.send_state(1, make_state(at(start_s), battery=10.0, lidar=lidar))
        await robot.wait_ack(1)


async def test_events_filters(
    server: RunningServer, open_robot: Any, http: httpx.AsyncClient
) -> None:
    """Events filter by robot, type and time range, newest first."""
    before = datetime.now(UTC)
    await produce_events(open_robot, "r1", 0)
    await wait_for(lambda: server.app.state.services.links.get("r1") is None)
    await events_stored(server)
    between = datetime.now(UTC)
    await produce_events(open_robot, "r2", 10)
    await wait_for(lambda: server.app.state.services.links.get("r2") is None)
    await events_stored(server)

    async def event_types(**params: Any) -> list[tuple[str, str]]:
        # The battery-low rule also sends the robot to charge; the command's own
        # events are tested with the command lifecycle.
        response = await http.get("/api/events", params=params)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        return [
            (item["robot_id"], item["type"])
            for item in items
            if not item["type"].startswith("command_")
        ]

    expected_r1 = [
        ("r1", "robot_disconnected"),
        ("r1", "obstacle_detected"),
        ("r1", "battery_low"),
        ("r1", "robot_connected"),
    ]
    assert await event_types(robot_id="r1") == expected_r1
    assert await event_types(type="battery_low") == [
        ("r2", "battery_low"),
        ("r1", "battery_low"),
    ]
    assert await event_types(start=iso(between)) == await event_types(robot_id="r2")
    assert await event_types(start=iso(before), end=iso(between)) == expected_r1
    assert await event_types(robot_id="r1", type="obstacle_detected") == [
        ("r1", "obstacle_detected")
    ]


async def test_events_invalid_filters_400(http: httpx.AsyncClient) -> None:
    """Event filters reject a bad robot id, a naive time and an empty range."""
    now = datetime.now(UTC)
    bad_id = await http.get("/api/events", params={"robot_id": "bad id"})
    naive = await http.get("/api/events", params={"start": "2026-01-01T00:00:00"})
    empty = await http.get("/api/events", params={"start": iso(now), "end": iso(now)})

    assert_error(bad_id, 400, "invalid_robot_id")
    assert_error(naive, 400, "timestamp_missing_timezone")
    assert_error(empty, 400, "invalid_time_range")


def idle_state(timestamp: datetime) -> RobotState:
    return RobotState(
        timestamp=timestamp,
        position=Position(x=0.0, y=0.0),
        orientation=Orientation(yaw=0.0),
        velocity=Velocity(linear=0.0),
        status=RobotStatus.IDLE,
    )


async def test_command_reaches_connected_robot(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A command reaches the robot's client and its responses are stored as events."""
    received: list[dict[str, Any]] = []
    handled = asyncio.Event()

    async def on_command(data: dict[str, Any]) -> tuple[str, str | None]:
        received.append(data)
        handled.set()
        return "succeeded", "docked"

    async with RobotClient(server.ws_url, "r1", on_command=on_command) as client:
        await client.send_state(idle_state(at(0)))
        await client.flush(10)
        response = await http.post(
            "/api/robots/r1/commands", json={"type": "dock", "params": {"station": 2}}
        )
        assert response.status_code == 202, response.text
        sent = response.json()
        await asyncio.wait_for(handled.wait(), 10)

        async def final_status() -> bool:
            command = await http.get(f"/api/commands/{sent['command_id']}")
            return command.json()["status"] == "succeeded"

        await wait_for(final_status)
        await events_stored(server)
        events = (await http.get("/api/events", params={"robot_id": "r1"})).json()
        command = (await http.get(f"/api/commands/{sent['command_id']}")).json()

    assert sent["status"] == "sent"
    assert sent["robot_id"] == "r1"
    assert len(received) == 1
    assert received[0]["command_id"] == sent["command_id"]
    assert received[0]["type"] == "dock"
    assert received[0]["params"] == {"station": 2}
    assert command["message"] == "docked"
    stored_types = [
        item["type"]
        for item in reversed(events["items"])
        if item["data"].get("command_id") == sent["command_id"]
    ]
    assert stored_types[-2:] == ["command_acknowledged", "command_succeeded"]


async def test_command_frame_on_raw_socket(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """The robot's socket receives a ``command`` frame with the command's fields."""
    async with open_robot("r1") as robot:
        response = await http.post("/api/robots/r1/commands", json={"type": "stop"})
        frame = await robot.read_until(lambda frame: frame["type"] == "command")

    assert response.status_code == 202
    assert frame["data"]["command_id"] == response.json()["command_id"]
    assert frame["data"]["type"] == "stop"
    assert frame["data"]["params"] == {}


async def test_command_to_disconnected_robot_queued(
    open_robot: Any, server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A known robot without a live link gets its command queued for later."""
    await store_states(open_robot, "r1", 1)
    await wait_for(lambda: server.app.state.services.links.get("r1") is None)
    response = await http.post("/api/robots/r1/commands", json={"type": "stop"})

    assert response.status_code == 202
    assert response.json()["status"] == "queued"


async def test_command_to_unknown_robot_404(http: httpx.AsyncClient) -> None:
    """A command for a robot never seen gets 404."""
    response = await http.post("/api/robots/nobody/commands", json={"type": "stop"})

    assert_error(response, 404, "robot_not_found")


async def test_command_invalid_type_400(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A command type outside the safe character set is rejected."""
    async with open_robot("r1"):
        response = await http.post("/api/robots/r1/commands", json={"type": "go home"})

    assert_error(response, 400, "invalid_command_type")


async def test_robots_after_restart_show_stored_state(settings: Settings) -> None:
    """After a restart, offline robots are listed with their newest stored state."""
    async with running_server(settings, migrate_schema=True) as first:
        async with open_robot_socket(first.ws_url, "r1") as robot:
            for seq in range(1, 4):
                await robot.send_state(seq, make_state(at(seq - 1), battery=60.0 + seq))
            await robot.wait_ack(3)
    async with (
        running_server(settings) as second,
        httpx.AsyncClient(base_url=second.http_url) as http,
    ):
        listed = (await http.get("/api/robots")).json()
        state = (await http.get("/api/robots/r1/state")).json()

    assert [robot["robot_id"] for robot in listed] == ["r1"]
    assert listed[0]["online"] is False
    assert listed[0]["state"]["battery"] == 63.0
    assert state["last_seen"] == listed[0]["last_seen"]
    assert state["state"]["timestamp"] == iso(at(2))


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/robots/r1/commands", "before"),
        ("/api/missions", "before"),
        ("/api/events", "before_id"),
        ("/api/webhooks/1/deliveries", "before_id"),
    ],
)
@pytest.mark.parametrize("value", [2**63, 10**40])
async def test_page_cursor_beyond_64_bits_422(
    http: httpx.AsyncClient, path: str, name: str, value: int
) -> None:
    """A page cursor past the largest 64-bit row id is refused before any query."""
    response = await http.get(path, params={name: str(value)})

    assert_error(response, 422, "invalid_request")
