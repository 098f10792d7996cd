"""Helpers shared by the test suite: settings, robot states and raw robot sockets.

The fixtures in ``conftest.py`` build on these. Tests import the plain helpers
from here (``from support import make_state``); pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` is not inside a package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from fleethub.settings import Settings

# Long enough for a loaded 2-core CI machine, short enough that a hung test
# fails in seconds instead of hitting the global pytest timeout.
FRAME_TIMEOUT_S = 10.0

Frame = dict[str, Any]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Return test-server settings: loopback, any free port, a fresh SQLite file."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}",
        "writer_flush_interval_s": 0.01,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


def base_time() -> datetime:
    """Return a recent whole second in UTC, a safe first timestamp for a test robot."""
    return (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 with a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_state(timestamp: datetime | str, **fields: Any) -> dict[str, Any]:
    """Return a valid ``state_update`` data object; ``fields`` replace or add keys."""
    state: dict[str, Any] = {
        "timestamp": timestamp if isinstance(timestamp, str) else iso(timestamp),
        "position": {"x": 1.0, "y": 2.0, "z": 0.0},
        "orientation": {"roll": 0.0, "pitch": 0.0, "yaw": 0.5},
        "velocity": {"linear": 0.3, "angular": 0.1},
        "battery": 80.0,
        "status": "moving",
    }
    state.update(fields)
    return state


def state_frame(seq: int, state: dict[str, Any]) -> dict[str, Any]:
    """Wrap a state into a ``state_update`` frame."""
    return {"type": "state_update", "seq": seq, "data": state}


class RobotSocket:
    """A raw robot WebSocket that records every frame the server sent."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[Frame] = []

    async def send_json(self, payload: Any) -> None:
        await self.connection.send(json.dumps(payload))

    async def send_raw(self, payload: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) frame unchanged."""
        await self.connection.send(payload)

    async def send_state(self, seq: int, state: dict[str, Any]) -> None:
        await self.send_json(state_frame(seq, state))

    async def receive(self, timeout_s: float = FRAME_TIMEOUT_S) -> Frame:
        """Return the next server frame, decoded; raise on timeout or close."""
        raw = await asyncio.wait_for(self.connection.recv(), timeout_s)
        frame = json.loads(raw)
        self.received.append(frame)
        return frame

    async def read_until(
        self, condition: Callable[[Frame], bool], timeout_s: float = FRAME_TIMEOUT_S
    ) -> Frame:
        """Read frames until one meets ``condition`` and return it.

        Raises ``AssertionError`` listing the frames seen if the deadline passes
        or the server closes the connection first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen: list[Frame] = []
        while True:
            remaining = deadline - loop.time()
            try:
                frame = await self.receive(max(remaining, 0.0))
            except TimeoutError:
                raise AssertionError(
                    f"No matching frame in {timeout_s} s; saw {seen}"
                ) from None
            except websockets.ConnectionClosed as exc:
                raise AssertionError(f"Connection closed ({exc}); saw {seen}") from None
            if condition(frame):
                return frame
            seen.append(frame)

    async def wait_ack(self, seq: int, timeout_s: float = FRAME_TIMEOUT_S) -> Frame:
        """Wait for an ``ack`` that covers ``seq``."""
        return await self.read_until(
            lambda frame: frame["type"] == "ack" and frame["seq"] >= seq, timeout_s
        )

    async def wait_error(self, code: str, timeout_s: float = FRAME_TIMEOUT_S) -> Frame:
        """Wait for an ``error`` frame with ``code``."""
        return await self.read_until(
            lambda frame: frame["type"] == "error" and frame["code"] == code, timeout_s
        )

    async def wait_closed(self, timeout_s: float = FRAME_TIMEOUT_S) -> int | None:
        """Read until the server closes the connection; return the close code."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self.receive(timeout_s)
        return self.connection.close_code


@contextlib.asynccontextmanager
async def open_robot_socket(
    ws_url: str, robot_path: str, *, expect_welcome: bool = True
) -> AsyncIterator[RobotSocket]:
    """Connect to ``/ws/robots/<robot_path>``; ``robot_path`` goes into the URL as is.

    With ``expect_welcome`` the ``welcome`` frame is read (and checked) before
    the socket is handed over, so the link is ready for states.
    """
    async with websockets.connect(f"{ws_url}/ws/robots/{robot_path}") as connection:
        robot = RobotSocket(connection)
        if expect_welcome:
            welcome = await robot.receive()
            assert welcome["type"] == "welcome", welcome
        yield robot


async def fetch_telemetry(
    http: httpx.AsyncClient, robot_id: str, **params: Any
) -> list[dict[str, Any]]:
    """Return every stored state of a robot through the REST API, walking all pages."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": 1000, **params}
    while True:
        response = await http.get(f"/api/robots/{robot_id}/telemetry", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


async def count_telemetry(http: httpx.AsyncClient, robot_id: str) -> int:
    """Return how many states of a robot the REST API reports as stored."""
    return len(await fetch_telemetry(http, robot_id))


async def wait_for(
    condition: Callable[[], Any],
    timeout_s: float = FRAME_TIMEOUT_S,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` (sync or async) until it is truthy or ``timeout_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"Condition still false after {timeout_s} s.")
        await asyncio.sleep(interval)
