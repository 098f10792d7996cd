"""Helpers for tests that run a real fleethub server: clock, states, waiting."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fleethub.protocol import (
    Lidar,
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    Velocity,
)
from fleethub.settings import Settings

T = TypeVar("T")


class ManualClock:
    """A clock that moves only through :meth:`advance`; calling it returns the time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def server_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a server on a free loopback port with a fresh SQLite file."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}",
        **overrides,
    }
    return Settings(**values)


class StateFactory:
    """Build valid states with strictly increasing timestamps."""

    def __init__(self) -> None:
        self._next = datetime.now(UTC) - timedelta(seconds=30)

    def __call__(
        self,
        *,
        battery: float | None = 80.0,
        status: RobotStatus = RobotStatus.MOVING,
        min_range: float | None = None,
        beams: int = 0,
        linear: float = 0.5,
    ) -> RobotState:
        self._next += timedelta(milliseconds=1)
        lidar = None
        if min_range is not None or beams:
            ranges = [5.0] * max(beams, 1)
            ranges[0] = min_range if min_range is not None else 5.0
            lidar = Lidar(ranges=ranges, range_max=30.0)
        return RobotState(
            timestamp=self._next,
            position=Position(x=1.0, y=2.0),
            orientation=Orientation(yaw=0.0),
            velocity=Velocity(linear=linear),
            status=status,
            battery=battery,
            lidar=lidar,
        )


async def wait_until(
    condition: Callable[[], T | Awaitable[T]], limit_s: float = 10.0
) -> T:
    """Poll ``condition`` until it returns a truthy value and return that value.

    Raises TimeoutError after ``limit_s`` seconds.
    """
    async with asyncio.timeout(limit_s):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            await asyncio.sleep(0.01)
