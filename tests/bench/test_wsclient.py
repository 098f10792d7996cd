"""Tests for the benchmark's lean WebSocket client against a real server."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.server import ServerConnection, serve

from fleethub.bench.wsclient import open_client

TIMEOUT_S = 5.0


async def test_messages_fragments_pings_and_close() -> None:
    """Every message arrives whole, pings get pongs and the close code is kept."""
    pong_seen: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.send(["a" * 10, "b" * 70_000, "c"])  # fragmented, 64-bit length
        await ws.send("d" * 300)  # 16-bit length
        pong = await ws.ping(b"are you there")
        pong_seen.append(await asyncio.wait_for(pong, TIMEOUT_S))
        await ws.send(b"binary")
        await ws.close(4008, "too_slow")

    received: list[bytes] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await open_client(
            f"ws://127.0.0.1:{port}/ws?x=1",
            lambda message, _at: received.append(bytes(message)),
            time.time,
        )
        await asyncio.wait_for(client.closed, TIMEOUT_S)

    assert received == [
        b"hello",
        b"a" * 10 + b"b" * 70_000 + b"c",
        b"d" * 300,
        b"binary",
    ]
    assert len(pong_seen) == 1
    assert client.close_code == 4008
