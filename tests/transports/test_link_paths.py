"""The robot link over both of its socket paths, on a real uvicorn server.

Under fleethub's own protocol the link reads from the raw-frame inbox and
writes pre-built frames. Under uvicorn's plain protocol it falls back to
ASGI receives and sends. Every test here runs on both and expects the same
behaviour from the robot's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)

from auth_helpers import robot_headers
from fleethub.api.app import create_app
from fleethub.cli.server import RunningServer, uvicorn_config
from fleethub.client.robot import RobotClient
from fleethub.models import utcnow
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.settings import Settings
from fleethub.transports.raw_frames import RawFrameWebSocketProtocol
from fleethub.transports.websocket import INBOX_MAX_BYTES
from security.support import secure_settings
from support import (
    base_time,
    count_telemetry,
    make_settings,
    make_state,
    open_robot_socket,
    state_frame,
    wait_for,
)

# asyncio reads at most this much from a socket at a time.
SOCKET_READ_BYTES = 256 * 1024

PATHS = {"inbox": RawFrameWebSocketProtocol, "asgi": WebSocketsSansIOProtocol}


def robot_state(moment: datetime) -> RobotState:
    return RobotState(
        timestamp=moment,
        position=Position(x=0, y=0),
        orientation=Orientation(yaw=0),
        velocity=Velocity(linear=0),
        status=RobotStatus.IDLE,
    )


async def disconnect_events(
    server: RunningServer, http: httpx.AsyncClient
) -> list[str]:
    """Wait for the link to end; return the robot's event types, newest first."""
    services = server.app.state.services
    await wait_for(lambda: services.links.get("r1") is None)
    await services.event_writer.wait_idle(10)
    events = (await http.get("/api/events", params={"robot_id": "r1"})).json()
    return [item["type"] for item in events["items"]]


@contextlib.asynccontextmanager
async def serve(settings: Settings, path: str) -> AsyncIterator[RunningServer]:
    """Run fleethub with the WebSocket protocol of ``path``."""
    app = create_app(settings, migrate_schema=True)
    config = uvicorn_config(app, settings)
    config.ws = PATHS[path]
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done())
    assert server.started, "the server did not start"
    try:
        yield RunningServer(server, task, app)
    finally:
        server.should_exit = True
        await task


def protocols(server: RunningServer) -> list[Any]:
    return list(server.server.server_state.connections)


def inboxes(server: RunningServer) -> list[Any]:
    return [p.inbox for p in protocols(server) if getattr(p, "inbox", None) is not None]


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def server(settings: Settings, path: str) -> AsyncIterator[RunningServer]:
    async with serve(settings, path) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10.0) as client:
        yield client


async def test_many_states_in_order(
    server: RunningServer, path: str, http: httpx.AsyncClient
) -> None:
    """Thousands of states sent back to back are acked in order and all stored."""
    count = 2_000
    start = base_time()
    async with open_robot_socket(server.ws_url, "r1") as robot:
        if path == "inbox":
            await wait_for(lambda: inboxes(server))
        else:
            assert inboxes(server) == []
        for seq in range(1, count + 1):
            await robot.send_state(seq, make_state(start + timedelta(seconds=seq)))
        await robot.wait_ack(count, timeout_s=30)
    acks = [frame["seq"] for frame in robot.received if frame["type"] == "ack"]
    assert acks == sorted(acks)
    assert [f for f in robot.received if f["type"] == "error"] == []
    assert await count_telemetry(http, "r1") == count


async def test_full_writer_pauses_reading_and_loses_nothing(
    tmp_path: Path, path: str
) -> None:
    """A stalled writer pauses the link and the socket reads, and loses no state."""
    settings = make_settings(tmp_path, writer_max_buffer=100, writer_batch_size=10)
    database = settings.database_url.removeprefix("sqlite+aiosqlite:///")
    states = 600
    start = base_time()
    async with serve(settings, path) as server:
        async with open_robot_socket(server.ws_url, "r1") as robot:
            lock = sqlite3.connect(database, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                for seq in range(1, states + 1):
                    await robot.send_state(
                        seq, make_state(start + timedelta(seconds=seq))
                    )
                await robot.wait_error("slow_down")
                # The robot's frames back up into the server's socket: reading paused.
                await wait_for(lambda: any(p.read_paused for p in protocols(server)))
                if path == "inbox":
                    # One socket read past the bound at most.
                    bound = INBOX_MAX_BYTES + SOCKET_READ_BYTES
                    assert [
                        i for i in inboxes(server) if i.buffered_bytes > bound
                    ] == []
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            await robot.wait_ack(states, timeout_s=30)
        stored = await server.app.state.services.storage.count_telemetry("r1")
    codes = {f["code"] for f in robot.received if f["type"] == "error"}
    assert codes == {"slow_down"}
    assert stored == states


async def test_disconnect_mid_stream(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """States sent before the robot closes are stored; presence goes offline."""
    start = base_time()
    services = server.app.state.services
    async with open_robot_socket(server.ws_url, "r1") as robot:
        for seq in range(1, 301):
            await robot.send_state(seq, make_state(start + timedelta(seconds=seq)))
        await robot.connection.close(code=1001)
    assert await disconnect_events(server, http) == [
        "robot_disconnected",
        "robot_connected",
    ]
    await services.telemetry_writer.wait_idle(10)
    assert await count_telemetry(http, "r1") == 300


async def test_abrupt_drop_mid_stream(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A connection lost without a close frame ends the link just the same."""
    async with open_robot_socket(server.ws_url, "r1") as robot:
        await robot.send_state(1, make_state(base_time()))
        await robot.wait_ack(1)
        robot.connection.transport.abort()
    assert await disconnect_events(server, http) == [
        "robot_disconnected",
        "robot_connected",
    ]


async def test_oversize_frames(server: RunningServer, settings: Settings) -> None:
    """A frame over max_frame_bytes gets an error, and the link stays open.

    A frame over the hard limit closes the connection with 1009.
    """
    limit = settings.max_frame_bytes
    async with open_robot_socket(server.ws_url, "r1") as robot:
        await robot.send_raw("x" * (limit + 1))
        error = await robot.wait_error("frame_too_large")
        await robot.send_state(1, make_state(base_time()))
        await robot.wait_ack(1)
        await robot.send_raw(b"x" * (limit * 4 + 1))
        assert await robot.wait_closed() == 1009
    assert error["details"] == {"limit": limit}


async def test_binary_frames(server: RunningServer) -> None:
    """A binary frame is parsed as UTF-8 JSON.

    An invalid one gets an error, and the link stays open.
    """
    async with open_robot_socket(server.ws_url, "r1") as robot:
        await robot.send_raw(b"\xff\xfe not json")
        error = await robot.read_until(lambda frame: frame["type"] == "error")
        await robot.send_raw(
            json.dumps(state_frame(1, make_state(base_time()))).encode()
        )
        await robot.wait_ack(1)
    assert error["code"] == "invalid_json"


async def test_invalid_utf8_text_frame_closes_with_1007(server: RunningServer) -> None:
    """A text frame that is not UTF-8 closes the connection with 1007."""
    async with open_robot_socket(server.ws_url, "r1") as robot:
        connection = robot.connection
        # The client library cannot build such a frame from a str, so send bytes.
        connection.protocol.send_text(b"\xff\xfe\xfd")
        connection.send_data()
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await robot.receive()
    assert connection.close_code == 1007


async def test_rate_limit_on_both_paths(tmp_path: Path, path: str) -> None:
    """The per-robot limit delays messages with rate_limited frames, losing none."""
    settings = secure_settings(tmp_path, rate_limit_robot="4/second")
    async with serve(settings, path) as server:
        headers = await robot_headers(server, "fast-robot")
        async with RobotClient(server.ws_url, "fast-robot", headers=headers) as client:
            for index in range(8):
                await client.send_state(
                    robot_state(utcnow() - timedelta(seconds=10 - index))
                )
            await client.flush(30)
        stored = await server.app.state.services.storage.count_telemetry("fast-robot")
    limited = [frame for frame in client.errors if frame.code == "rate_limited"]
    assert limited
    assert 0 < limited[0].details["retry_after_s"] <= 1
    assert client.stats.acked == 8
    assert stored == 8
