"""Tests for pre-built WebSocket frames written past ASGI, and for the fallback.

Frames are checked by the ``websockets`` client, which rejects any malformed
or interleaved frame, over a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from fleethub.api.app import create_app
from fleethub.cli.server import uvicorn_config
from fleethub.client.robot import RobotClient
from fleethub.testing import StateFactory, server_settings, wait_until
from fleethub.transports.raw_frames import (
    ConnectionClosing,
    RawFrameWebSocketProtocol,
    RawFrameWriter,
    raw_writer,
    text_frame,
)

TIMEOUT_S = 10.0
# Payload sizes around the 7-bit, 16-bit and 64-bit length encodings.
SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 300_000]


def payload(size: int, mark: int) -> bytes:
    """``size`` bytes that start with ``mark``, so frames cannot be mixed up."""
    return (f"{mark}:".encode() + b"x" * size)[:size]


@contextlib.asynccontextmanager
async def serve(
    endpoint: Callable[[WebSocket], Awaitable[None]],
    protocol: Any = RawFrameWebSocketProtocol,
    **options: Any,
) -> AsyncIterator[int]:
    """Serve one WebSocket endpoint with uvicorn on a free loopback port."""
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=protocol, log_config=None, **options
    )
    async with running(uvicorn.Server(config)) as server:
        yield server.servers[0].sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def running(server: uvicorn.Server) -> AsyncIterator[uvicorn.Server]:
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done())
    assert server.started, "the server did not start"
    try:
        yield server
    finally:
        server.should_exit = True
        await task


async def write_all(writer: RawFrameWriter, frames: bytes) -> None:
    while not writer.write(frames, 1 << 20):
        await writer.wait_writable()


async def test_frames_of_every_length_reach_a_websockets_client() -> None:
    """Raw frames of every length encoding, between ASGI sends and pings, arrive."""
    expected: list[bytes] = []
    rejected_after_close: list[bool] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        writer = raw_writer(websocket.scope)
        assert writer is not None
        for mark, size in enumerate(SIZES):
            body = payload(size, mark)
            expected.append(body)
            await write_all(writer, text_frame(body))
            await websocket.send_text(f"asgi {mark}")  # compressed, if negotiated
            expected.append(f"asgi {mark}".encode())
        several = [payload(size, 100 + n) for n, size in enumerate(SIZES)]
        await write_all(writer, b"".join(text_frame(body) for body in several))
        expected.extend(several)
        await websocket.receive_text()
        await websocket.close()
        try:
            writer.write(text_frame(b"late"), 1 << 20)
        except ConnectionClosing:
            rejected_after_close.append(True)

    received: list[bytes] = []
    # A 10 ms keep-alive puts the server's pings between the raw frames.
    async with serve(endpoint, ws_ping_interval=0.01, ws_ping_timeout=5) as port:
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions")
            while len(received) < 3 * len(SIZES):
                message = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                assert isinstance(message, str)
                received.append(message.encode())
            await ws.send("done")

    assert received == expected
    await wait_until(lambda: rejected_after_close)


async def test_writer_rejects_a_peer_that_stopped_reading() -> None:
    """Writes stop once the peer is behind, and fail once the socket closes."""
    outcome: dict[str, Any] = {}
    frame = text_frame(b"y" * 65_536)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        writer = raw_writer(websocket.scope)
        assert writer is not None
        written = 0
        while written < 10_000 and writer.write(frame, 256 * 1024):
            written += 1
            await asyncio.sleep(0)  # let the transport hand bytes to the kernel
        outcome["written"] = written
        outcome["writer"] = writer
        # Like the stream: give the close frame a moment, then drop the socket.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(websocket.close(4008, "too_slow"), 0.2)

    def rejected(writer: RawFrameWriter) -> bool:
        try:
            writer.write(b"", 1 << 30)
        except ConnectionClosing:
            return True
        return False

    async with serve(endpoint) as port:
        sock = open_unread_socket(port)
        try:
            writer = await wait_until(lambda: outcome.get("writer"), TIMEOUT_S)
            await wait_until(lambda: rejected(writer), TIMEOUT_S)
        finally:
            sock.close()

    # The kernel buffers hold some frames; the rest stay bounded.
    assert 0 < outcome["written"] < 10_000


async def fill_and_reject(websocket: WebSocket) -> None:
    """Accept, then write until the peer is behind."""
    await websocket.accept()
    writer = raw_writer(websocket.scope)
    assert writer is not None
    frame = text_frame(b"z" * 65_536)
    # Yield between writes so the transport hands bytes to the kernel.
    while writer.write(frame, 256 * 1024):  # noqa: ASYNC110
        await asyncio.sleep(0)


def plain_server(endpoint: Callable[[WebSocket], Awaitable[None]]) -> uvicorn.Server:
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=RawFrameWebSocketProtocol, log_config=None
    )
    return uvicorn.Server(config)


async def test_close_drops_a_peer_that_stopped_reading(monkeypatch: Any) -> None:
    """A close frame the peer never reads does not keep the connection open."""
    monkeypatch.setattr(RawFrameWebSocketProtocol, "abort_after_s", 0.05)

    async def endpoint(websocket: WebSocket) -> None:
        await fill_and_reject(websocket)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(websocket.close(4008, "too_slow"), 0.2)

    async with running(plain_server(endpoint)) as server:
        sock = open_unread_socket(server.servers[0].sockets[0].getsockname()[1])
        try:
            connections = server.server_state.connections
            await wait_until(lambda: connections, TIMEOUT_S)
            await wait_until(lambda: not connections, TIMEOUT_S)
        finally:
            sock.close()


async def test_shutdown_drops_a_peer_that_stopped_reading(monkeypatch: Any) -> None:
    """Stopping the server does not wait for a peer that stopped reading."""
    monkeypatch.setattr(RawFrameWebSocketProtocol, "abort_after_s", 0.05)
    filled = asyncio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        await fill_and_reject(websocket)
        filled.set()
        await websocket.receive()

    server = plain_server(endpoint)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done())
    sock = open_unread_socket(server.servers[0].sockets[0].getsockname()[1])
    try:
        await asyncio.wait_for(filled.wait(), TIMEOUT_S)
        server.should_exit = True
        await wait_until(task.done, TIMEOUT_S)
    finally:
        sock.close()
        await task


def open_unread_socket(port: int) -> socket.socket:
    """Open a WebSocket on a raw socket with a small buffer and never read it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


async def test_no_extension_under_plain_uvicorn() -> None:
    """uvicorn's own protocol offers no raw writer, so callers must fall back."""
    seen: list[object] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.append(raw_writer(websocket.scope))
        await websocket.close()

    async with serve(endpoint, protocol="websockets-sansio") as port:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)

    assert seen == [None]


@contextlib.asynccontextmanager
async def fleethub_server(
    tmp_path: Path, protocol: Any = None
) -> AsyncIterator[tuple[str, Any]]:
    """Run fleethub; ``protocol`` replaces the WebSocket protocol it chooses."""
    settings = server_settings(tmp_path, max_lidar_beams=20_000)
    app = create_app(settings, migrate_schema=True)
    config = uvicorn_config(app, settings)
    if protocol is not None:
        config.ws = protocol
    async with running(uvicorn.Server(config)) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", app


async def stream_large_states(tmp_path: Path, protocol: Any = None) -> None:
    """Large states reach a plain and a batching subscriber intact and in order."""
    state = StateFactory()
    # About 24 KB (a 16-bit length) and 68 KB (a 64-bit length) as JSON.
    beams = [6_000, 17_000] * 4
    async with fleethub_server(tmp_path, protocol) as (url, _app):
        async with (
            connect(f"{url}/ws/fleet?events=false", max_size=None) as plain,
            connect(
                f"{url}/ws/fleet?events=false&batch_ms=50", max_size=None
            ) as batched,
            RobotClient(url, "r1") as robot,
        ):
            for ws in (plain, batched):
                greeting = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                assert greeting["type"] == "subscribed"
            sent = [state(beams=count) for count in beams]
            for one in sent:
                await robot.send_state(one)
            await robot.flush(TIMEOUT_S)

            plain_states = [
                json.loads(await asyncio.wait_for(plain.recv(), TIMEOUT_S))
                for _ in beams
            ]
            batched_states: list[dict[str, Any]] = []
            while len(batched_states) < len(beams):
                frame = json.loads(await asyncio.wait_for(batched.recv(), TIMEOUT_S))
                assert frame["type"] == "batch"
                batched_states.extend(frame["items"])

    for states in (plain_states, batched_states):
        assert [m["type"] for m in states] == ["state_update"] * len(beams)
        assert [datetime.fromisoformat(m["data"]["timestamp"]) for m in states] == [
            one.timestamp for one in sent
        ]
        assert [len(m["data"]["lidar"]["ranges"]) for m in states] == beams


async def test_stream_sends_raw_frames(tmp_path: Path) -> None:
    """/ws/fleet over fleethub's protocol: 16- and 64-bit frames arrive intact."""
    await stream_large_states(tmp_path)


async def test_stream_falls_back_to_asgi_sends(tmp_path: Path) -> None:
    """/ws/fleet under uvicorn's own protocol sends through ASGI, same frames."""
    await stream_large_states(tmp_path, "websockets-sansio")
