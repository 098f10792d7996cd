"""Robot link lifecycle over a real socket: welcome, presence and shutdown."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta, timezone
from typing import Any

import httpx

from fleethub.cli.server import running_server
from fleethub.settings import Settings
from support import (
    base_time,
    count_telemetry,
    fetch_telemetry,
    iso,
    make_state,
    open_robot_socket,
    state_frame,
    wait_for,
)


async def test_welcome_on_first_connect(open_robot: Any) -> None:
    """A robot with nothing stored gets a welcome with a null last timestamp."""
    async with open_robot("r1", expect_welcome=False) as robot:
        welcome = await robot.receive()

    assert welcome == {"type": "welcome", "robot_id": "r1", "last_timestamp": None}


async def test_binary_json_state_accepted(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A state in a binary frame holding UTF-8 JSON is stored like a text one."""
    async with open_robot("r1") as robot:
        frame = state_frame(1, make_state(base_time()))
        await robot.send_raw(json.dumps(frame).encode())
        await robot.wait_ack(1)

    assert await count_telemetry(http, "r1") == 1


async def test_connect_and_disconnect_events(
    server: Any, open_robot: Any, http: httpx.AsyncClient
) -> None:
    """Opening and closing a link records robot_connected and robot_disconnected."""
    async with open_robot("r1") as robot:
        await robot.send_state(1, make_state(base_time()))
        await robot.wait_ack(1)
    await wait_for(lambda: server.app.state.services.links.get("r1") is None)
    await server.app.state.services.event_writer.wait_idle(10)
    events = (await http.get("/api/events", params={"robot_id": "r1"})).json()

    types = [item["type"] for item in events["items"]]
    assert types == ["robot_disconnected", "robot_connected"]
    assert events["items"][1]["data"] == {"replaced": False}


async def test_server_shutdown_closes_links_1012(settings: Settings) -> None:
    """Stopping the server closes robot links with 1012 (service restart)."""
    async with contextlib.AsyncExitStack() as stack:
        async with running_server(settings, migrate_schema=True) as server:
            robot = await stack.enter_async_context(
                open_robot_socket(server.ws_url, "r1")
            )

        assert await robot.wait_closed() == 1012


async def test_timestamp_offset_stored_as_utc(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A +02:00 timestamp is stored in UTC; the same instant in UTC is a duplicate."""
    utc = base_time()
    local = utc.astimezone(timezone(timedelta(hours=2))).isoformat()
    async with open_robot("r1") as robot:
        await robot.send_state(1, make_state(local))
        await robot.wait_ack(1)
        await robot.send_state(2, make_state(utc))
        await robot.wait_ack(2)

    rows = await fetch_telemetry(http, "r1")
    assert local.endswith("+02:00")
    assert [row["ts"] for row in rows] == [iso(utc)]
