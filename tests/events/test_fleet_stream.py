"""Tests for the operator live stream: /ws/fleet and /api/stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.protocol import RobotStatus
from fleethub.stream.hub import StreamHub
from fleethub.testing import StateFactory, server_settings, wait_until

RECEIVE_TIMEOUT_S = 5.0


async def receive(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT_S))


@contextlib.asynccontextmanager
async def fleet_socket(
    server: RunningServer, query: str = ""
) -> AsyncIterator[ClientConnection]:
    """Connect to /ws/fleet and consume the ``subscribed`` greeting."""
    async with connect(f"{server.ws_url}/ws/fleet{query}") as ws:
        greeting = await receive(ws)
        assert greeting["type"] == "subscribed", greeting
        yield ws


async def collect_until(
    ws: ClientConnection, done: Any, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Receive messages until ``done(message)`` is true; return them all."""
    messages: list[dict[str, Any]] = []
    while len(messages) < limit:
        message = await receive(ws)
        messages.append(message)
        if done(message):
            return messages
    raise AssertionError(f"no final message in {limit} messages")


def is_event(event_type: str) -> Any:
    return lambda message: (
        message["type"] == "event" and message["data"]["type"] == event_type
    )


def hub_of(server: RunningServer) -> StreamHub:
    return server.app.state.services.stream


async def test_filters_at_connect(tmp_path: Path) -> None:
    """Robot, event type and severity filters given at connect select messages."""
    state = StateFactory()
    async with running_server(server_settings(tmp_path), migrate_schema=True) as server:
        async with (
            fleet_socket(server, "?robot_ids=r1&events=false") as r1_states,
            fleet_socket(
                server, "?event_types=battery_low,error_occurred&states=false"
            ) as typed,
            fleet_socket(server, "?min_severity=critical&states=false") as critical,
            RobotClient(server.ws_url, "r1") as r1,
            RobotClient(server.ws_url, "r2") as r2,
        ):
            await r2.send_state(state(battery=90.0))
            await r2.send_state(state(status=RobotStatus.ERROR))
            await r2.flush(RECEIVE_TIMEOUT_S)
            await r1.send_state(state(battery=10.0))
            await r1.send_state(state(battery=99.0, linear=0.25))
            states = await collect_until(
                r1_states, lambda m: m["data"].get("velocity", {}).get("linear") == 0.25
            )
            typed_messages = await collect_until(typed, is_event("battery_low"))
            critical_messages = await collect_until(
                critical, is_event("error_occurred")
            )

    assert {m["type"] for m in states} == {"state_update"}
    assert {m["robot_id"] for m in states} == {"r1"}
    assert [m["data"]["type"] for m in typed_messages] == [
        "error_occurred",
        "battery_low",
    ]
    assert [m["data"]["severity"] for m in critical_messages] == ["critical"]


async def test_subscribe_message_replaces_filters(tmp_path: Path) -> None:
    """A subscribe message changes filters, and an invalid one gets an error."""
    state = StateFactory()
    async with (
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        fleet_socket(server, "?robot_ids=r1") as ws,
        RobotClient(server.ws_url, "r2") as r2,
    ):
        await ws.send(json.dumps({"type": "subscribe", "min_severity": "loud"}))
        error = await receive(ws)
        await ws.send(
            json.dumps({"type": "subscribe", "robot_ids": ["r2"], "events": False})
        )
        subscribed = await receive(ws)
        await r2.send_state(state())
        update = await receive(ws)

    assert error["type"] == "error"
    assert error["error"] == "invalid_subscription"
    assert error["details"]["problems"][0]["location"] == ["min_severity"]
    assert subscribed["filters"]["robot_ids"] == ["r2"]
    assert update["type"] == "state_update"
    assert update["robot_id"] == "r2"


async def test_deeply_nested_subscribe_gets_error(tmp_path: Path) -> None:
    """A message nested deeper than the JSON parser recurses gets an error."""
    async with (
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        fleet_socket(server) as ws,
    ):
        await ws.send("[" * 5000 + "]" * 5000)
        error = await receive(ws)
        await ws.send(json.dumps({"type": "subscribe", "states": False}))
        subscribed = await receive(ws)

    assert error["error"] == "invalid_json"
    assert subscribed["filters"]["states"] is False


async def test_invalid_query_closes_with_error(tmp_path: Path) -> None:
    """Invalid filters at connect get an error message and close code 1008."""
    async with running_server(server_settings(tmp_path), migrate_schema=True) as server:
        async with connect(f"{server.ws_url}/ws/fleet?robot_ids=bad%20id") as ws:
            error = await receive(ws)
            with contextlib.suppress(websockets.ConnectionClosed):
                await receive(ws)
        async with connect(f"{server.ws_url}/ws/fleet?colour=red") as ws:
            unknown = await receive(ws)

    assert error["error"] == "invalid_robot_id"
    assert ws.close_code == 1008
    assert unknown["error"] == "invalid_subscription"


async def test_state_rate_limit_per_robot(tmp_path: Path) -> None:
    """state_rate_hz keeps at most one state per robot per period."""
    state = StateFactory()
    async with (
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        fleet_socket(server, "?state_rate_hz=0.001") as limited,
        fleet_socket(server) as unlimited,
        RobotClient(server.ws_url, "r1") as r1,
        RobotClient(server.ws_url, "r2") as r2,
    ):
        for robot in (r1, r2, r1, r2, r1, r2):
            await robot.send_state(state(battery=80.0))
        await r1.flush(RECEIVE_TIMEOUT_S)
        await r2.flush(RECEIVE_TIMEOUT_S)
        await r1.send_state(state(battery=10.0))
        everything = await collect_until(unlimited, is_event("battery_low"))
        limited_messages = await collect_until(limited, is_event("battery_low"))

    limited_states = [
        m["robot_id"] for m in limited_messages if m["type"] == "state_update"
    ]
    all_states = [m for m in everything if m["type"] == "state_update"]
    assert sorted(limited_states) == ["r1", "r2"]
    # The pipeline publishes a state's events before the state itself.
    assert len(all_states) == 6


def limit_send_buffers(server: RunningServer) -> None:
    """Give sockets the server accepts from now on a small, fixed send buffer.

    Accepted sockets inherit the listening socket's SO_SNDBUF on Linux. A
    fixed size turns off autotuning, which would otherwise let the kernel
    hold megabytes for a client that never reads.
    """
    listener = server.server.servers[0].sockets[0]
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def open_slow_subscriber(server: RunningServer) -> socket.socket:
    """Open /ws/fleet on a raw socket with a tiny receive buffer and never read it.

    The handshake response stays unread too: the server cannot tell this
    client from one that stopped reading on a congested network.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws/fleet HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def test_slow_subscriber_is_bounded_and_evicted(tmp_path: Path) -> None:
    """Subscribers that never read stay bounded and are evicted, delaying no one."""
    settings = server_settings(
        tmp_path, stream_state_queue=32, stream_event_queue=64, stream_max_missed=200
    )
    state = StateFactory()
    batches, per_batch = 25, 16
    async with running_server(settings, migrate_schema=True) as server:
        hub = hub_of(server)
        limit_send_buffers(server)
        slow_sockets = [open_slow_subscriber(server) for _ in range(3)]
        slow = await wait_until(
            lambda: len(hub.subscribers) == 3 and set(hub.subscribers)
        )
        async with (
            fleet_socket(server) as fast,
            RobotClient(server.ws_url, "r1") as robot,
        ):
            reader = asyncio.create_task(collect_until(fast, is_event("battery_low")))
            for _ in range(batches):
                for _ in range(per_batch):
                    await robot.send_state(state(beams=200))
                await robot.flush(RECEIVE_TIMEOUT_S)
            await robot.send_state(state(battery=5.0))
            await robot.flush(RECEIVE_TIMEOUT_S)
            fast_messages = await asyncio.wait_for(reader, RECEIVE_TIMEOUT_S)
            await wait_until(lambda: all(s.evicted.is_set() for s in slow))
            fast_subscriber = next(iter(hub.subscribers))
        for sock in slow_sockets:
            sock.close()

    states_seen = sum(1 for m in fast_messages if m["type"] == "state_update")
    missed = sum(m["states"] for m in fast_messages if m["type"] == "missed")
    assert robot.stats.acked == batches * per_batch + 1
    # The battery_low event is published before the state that raised it.
    assert states_seen + missed == batches * per_batch
    assert not fast_subscriber.evicted.is_set()
    for subscriber in slow:
        assert subscriber.eviction_reason == "too_slow"
        assert subscriber.peak_length <= 32 + 64
        assert subscriber.missed_total > 200
        assert len(subscriber) == 0


async def test_sse_stream_with_filters(tmp_path: Path) -> None:
    """/api/stream sends filtered events as server-sent events."""
    state = StateFactory()
    async with (
        running_server(server_settings(tmp_path), migrate_schema=True) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
        RobotClient(server.ws_url, "r1") as robot,
    ):
        params = {"event_types": "battery_low", "states": "false"}
        async with http.stream("GET", "/api/stream", params=params) as response:
            await wait_until(lambda: len(hub_of(server).subscribers) == 1)
            await robot.send_state(state(battery=50.0))
            await robot.send_state(state(battery=10.0))
            lines = response.aiter_lines()
            received = await asyncio.wait_for(next_data(lines), RECEIVE_TIMEOUT_S)
        bad = await http.get("/api/stream", params={"min_severity": "loud"})

    assert response.headers["content-type"].startswith("text/event-stream")
    assert received["type"] == "event"
    assert received["data"]["type"] == "battery_low"
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_subscription"


async def next_data(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data:"):
            return json.loads(line.removeprefix("data:").strip())
    raise AssertionError("stream ended")


async def test_shutdown_with_an_unread_event_stream(tmp_path: Path) -> None:
    """An SSE client that stopped reading does not keep the server from stopping."""
    state = StateFactory()
    settings = server_settings(
        tmp_path, shutdown_timeout_s=0.5, rate_limit_robot="100000/second"
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # A deadline instead of a hang: stopping must finish at all.
        async with asyncio.timeout(60):
            async with running_server(settings, migrate_schema=True) as server:
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: fleethub\r\n\r\n")
                await wait_until(lambda: hub_of(server).subscribers)
                async with RobotClient(server.ws_url, "r1") as robot:
                    # Far more than the kernel buffers hold: the response stalls.
                    for _ in range(600):
                        await robot.send_state(state(beams=4096))
                    await robot.flush(30)
    finally:
        sock.close()
    assert server.task.done()


async def test_batched_frames(tmp_path: Path) -> None:
    """With batch_ms, queued states arrive together in fewer 'batch' frames."""
    state = StateFactory()
    async with running_server(server_settings(tmp_path), migrate_schema=True) as server:
        async with (
            fleet_socket(server, "?robot_ids=r1&events=false&batch_ms=200") as ws,
            RobotClient(server.ws_url, "r1") as robot,
        ):
            for _ in range(20):
                await robot.send_state(state())
            await robot.flush(RECEIVE_TIMEOUT_S)
            frames: list[dict[str, Any]] = []
            states: list[dict[str, Any]] = []
            while len(states) < 20:
                frame = await receive(ws)
                frames.append(frame)
                states.extend(frame["items"])

    assert all(frame["type"] == "batch" for frame in frames)
    assert len(frames) < 20
    assert [item["type"] for item in states] == ["state_update"] * 20
    timestamps = [item["data"]["timestamp"] for item in states]
    assert timestamps == sorted(timestamps)


async def test_batch_ms_rejects_out_of_range(tmp_path: Path) -> None:
    """A batch interval outside 0..10000 ms is an invalid subscription."""
    async with running_server(server_settings(tmp_path), migrate_schema=True) as server:
        async with connect(f"{server.ws_url}/ws/fleet?batch_ms=-5") as ws:
            reply = await receive(ws)

    assert reply["type"] == "error"
    assert reply["error"] == "invalid_subscription"
    assert reply["details"]["problems"][0]["location"] == ["batch_ms"]
