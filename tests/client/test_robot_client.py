"""The robot client library against real servers: resume, back-off and commands."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from fleethub.cli.server import RunningServer, running_server
from fleethub.client.robot import RobotClient
from fleethub.protocol import (
    Lidar,
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    Velocity,
)
from fleethub.settings import Settings
from support import base_time, fetch_telemetry, iso, wait_for

T0 = base_time()
# Beams per scan, as in the Intel log, so frames have a realistic size.
SCAN_BEAMS = 180


def numbered_state(index: int) -> RobotState:
    """Return state number ``index``, stamped ``index`` milliseconds after T0."""
    return RobotState(
        timestamp=T0 + timedelta(milliseconds=index),
        position=Position(x=index * 0.01, y=0.0),
        orientation=Orientation(yaw=0.0),
        velocity=Velocity(linear=0.1),
        status=RobotStatus.MOVING,
        lidar=Lidar(ranges=[5.0] * SCAN_BEAMS),
    )


@contextlib.asynccontextmanager
async def server_on_port(settings: Settings, port: int) -> AsyncIterator[RunningServer]:
    async with running_server(
        settings.model_copy(update={"port": port}), migrate_schema=True
    ) as running:
        yield running


async def stored_timestamps(server: RunningServer, robot_id: str) -> list[str]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        return [row["ts"] for row in await fetch_telemetry(http, robot_id)]


async def test_client_resends_after_server_restart(settings: Settings) -> None:
    """States in flight when the server stops are stored once after a restart."""
    client: RobotClient | None = None
    stop_sending = asyncio.Event()
    sent: list[datetime] = []

    async def produce() -> None:
        # A robot loop that sends a state every millisecond until stop_sending is set.
        assert client is not None
        while not stop_sending.is_set():
            state = numbered_state(len(sent))
            sent.append(state.timestamp)
            await client.send_state(state)
            await asyncio.sleep(0.001)

    async with running_server(settings, migrate_schema=True) as first:
        port = first.port
        client = RobotClient(first.ws_url, "r1", min_backoff_s=0.01, max_backoff_s=0.05)
        await client.start()
        producer = asyncio.create_task(produce())
        await wait_for(lambda: client.stats.acked >= 200)

    in_flight_at_stop = client.in_flight
    sent_at_stop = len(sent)
    async with server_on_port(settings, port) as second:
        # Keep producing until states sent after the restart are acknowledged too.
        await wait_for(lambda: client.stats.acked >= sent_at_stop + 300)
        stop_sending.set()
        await producer
        await client.flush(30)
        timestamps = await stored_timestamps(second, "r1")
        await client.close()

    assert in_flight_at_stop > 0
    assert client.stats.reconnects >= 1
    assert client.stats.resent > 0
    assert client.stats.rejected == {}
    assert client.stats.acked == client.stats.sent == len(sent)
    assert timestamps == [iso(moment) for moment in sent]


async def test_client_welcome_drops_stored_states(settings: Settings) -> None:
    """After a restart the client resends only states newer than the welcome's time."""
    async with running_server(settings, migrate_schema=True) as first:
        port = first.port
        async with RobotClient(first.ws_url, "r1") as client:
            for index in range(5):
                await client.send_state(numbered_state(index))
            await client.flush(10)

    async with server_on_port(settings, port) as second:
        client = RobotClient(second.ws_url, "r1", min_backoff_s=0.01)
        # States the client still has as unacknowledged, as when an ack was lost.
        client._in_flight.update(
            {seq: (numbered_state(seq - 1).timestamp, b"") for seq in range(1, 6)}
        )
        client._drained.clear()
        async with client:
            await client.flush(10)
            await client.send_state(numbered_state(5))
            await client.flush(10)
        timestamps = await stored_timestamps(second, "r1")

    assert client.stats.resent == 0
    assert client.stats.acked == 6
    assert timestamps == [iso(numbered_state(index).timestamp) for index in range(6)]


async def test_client_reconnects_with_backoff(settings: Settings) -> None:
    """While the server is down the client keeps retrying, then reconnects and sends."""
    async with running_server(settings, migrate_schema=True) as first:
        port = first.port
        client = RobotClient(first.ws_url, "r1", min_backoff_s=0.01, max_backoff_s=0.02)
        await client.start()
        await client.send_state(numbered_state(0))
        await client.flush(10)

    await wait_for(lambda: client.stats.reconnects >= 3)
    await client.send_state(numbered_state(1))
    assert client.in_flight == 1

    async with server_on_port(settings, port) as second:
        await client.flush(10)
        timestamps = await stored_timestamps(second, "r1")
        await client.close()

    assert timestamps == [iso(numbered_state(index).timestamp) for index in range(2)]
    assert client.stats.acked == 2


@pytest.mark.parametrize("attempt", range(1, 21))
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    """The delay is drawn from [ceiling / 2, ceiling], doubling up to the maximum."""
    client = RobotClient(
        "ws://127.0.0.1:1", "r1", min_backoff_s=0.1, max_backoff_s=10.0
    )
    ceiling = min(10.0, 0.1 * 2**attempt)

    delays = [client._backoff(attempt) for _ in range(50)]

    assert min(delays) >= ceiling / 2
    assert max(delays) <= ceiling


async def test_duplicate_command_runs_once(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A command delivered twice runs once and both copies get a response."""
    calls: list[dict[str, Any]] = []
    release = asyncio.Event()

    async def on_command(data: dict[str, Any]) -> tuple[str, str | None]:
        calls.append(data)
        await release.wait()
        return "succeeded", None

    async with RobotClient(server.ws_url, "r1", on_command=on_command) as client:
        await client.send_state(numbered_state(0))
        await client.flush(10)
        response = await http.post("/api/robots/r1/commands", json={"type": "dock"})
        command_id = response.json()["command_id"]
        await wait_for(lambda: len(calls) == 1)
        link = server.app.state.services.links.get("r1")
        link.send_command(calls[0])
        await wait_for(lambda: client.stats.duplicate_commands == 1)
        release.set()

        async def succeeded() -> bool:
            command = await http.get(f"/api/commands/{command_id}")
            return command.json()["status"] == "succeeded"

        await wait_for(succeeded)
        # The second copy's answer repeats the final status, which the server
        # reports back as a duplicate.
        await wait_for(
            lambda: any(e.code == "duplicate_command_response" for e in client.errors)
        )

    assert len(calls) == 1
    assert client.stats.commands == 1


async def test_repeated_command_after_completion(server: RunningServer) -> None:
    """A repeated command id gets the stored outcome without running again."""
    calls: list[str] = []

    async def on_command(data: dict[str, Any]) -> tuple[str, str | None]:
        calls.append(data["command_id"])
        return "failed", "arm jammed"

    async with RobotClient(server.ws_url, "r1", on_command=on_command) as client:
        link = server.app.state.services.links.get("r1")
        link.send_command({"command_id": "cmd-1", "type": "pick"})
        await wait_for(lambda: calls == ["cmd-1"])
        link.send_command({"command_id": "cmd-1", "type": "pick"})
        await wait_for(lambda: client.stats.duplicate_commands == 1)
        link.send_command({"command_id": "cmd-2", "type": "pick"})
        await wait_for(lambda: len(calls) == 2)

    assert calls == ["cmd-1", "cmd-2"]
    assert client.stats.commands == 2


async def test_start_timeout_stops_retrying() -> None:
    """A client that cannot connect in time raises and leaves no task retrying."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    client = RobotClient(f"ws://127.0.0.1:{free_port}", "r1", min_backoff_s=0.01)

    with pytest.raises(TimeoutError):
        await client.start(0.2)

    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "robot-client-r1" not in names
    assert client.stats.reconnects >= 1


async def test_start_timeout_names_http_status(tmp_path: Any) -> None:
    """A handshake rejected for a missing credential shows up in start()'s error."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        port=0,
        auth_enabled=True,
    )
    async with running_server(settings, migrate_schema=True) as server:
        client = RobotClient(server.ws_url, "r1", min_backoff_s=0.01)
        with pytest.raises(TimeoutError) as timed_out:
            await client.start(0.5)

    message = str(timed_out.value)
    assert "HTTP 401" in message
    assert "/ws/robots/r1" in message
