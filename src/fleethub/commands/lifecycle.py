"""The background task behind command and mission timers and reconnects.

It runs two loops, both cancelled by :meth:`LifecycleRunner.stop`:

- every ``interval_s`` it calls each sweep with the clock's time (command
  expiry and resends, mission timeouts and assignment);
- it follows ``robot_connected`` events on the bus and calls each connect
  hook with the robot id (queued commands are delivered, running missions
  resume).

Tests call :meth:`run_sweeps` with a chosen time instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import msgspec

from fleethub.bus.base import EVENTS, EventBus, Subscription
from fleethub.models import utcnow

logger = logging.getLogger(__name__)

Sweep = Callable[[datetime], Awaitable[None]]
ConnectHook = Callable[[str], Awaitable[None]]


class _EventData(msgspec.Struct):
    type: str
    robot_id: str | None = None


class _EventEnvelope(msgspec.Struct):
    data: _EventData


_decoder = msgspec.json.Decoder(_EventEnvelope)


class LifecycleRunner:
    """Run periodic sweeps and reconnect hooks until stopped."""

    def __init__(
        self,
        bus: EventBus,
        sweeps: Sequence[Sweep],
        connect_hooks: Sequence[ConnectHook],
        interval_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.sweeps = list(sweeps)
        self.connect_hooks = list(connect_hooks)
        self.interval_s = interval_s
        self.clock = clock
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Subscribe to events and start both loops."""
        self._subscription = self.bus.subscribe(frozenset({EVENTS}), maxsize=10_000)
        self._tasks = [
            asyncio.create_task(self._tick(), name="lifecycle-sweeps"),
            asyncio.create_task(
                self._follow(self._subscription), name="lifecycle-connects"
            ),
        ]
        logger.info("lifecycle_started", extra={"interval_s": self.interval_s})

    async def stop(self) -> None:
        """Cancel both loops and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._subscription is not None:
            self.bus.unsubscribe(self._subscription)
        logger.info("lifecycle_stopped")

    async def run_sweeps(self, now: datetime | None = None) -> None:
        """Run every sweep once at ``now`` (default: the clock's time)."""
        now = now or self.clock()
        for sweep in self.sweeps:
            try:
                await sweep(now)
            except Exception:
                logger.exception("lifecycle_sweep_failed", extra={"sweep": repr(sweep)})

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.run_sweeps()

    async def _follow(self, subscription: Subscription) -> None:
        while True:
            _channel, message = await subscription.get()
            try:
                event = _decoder.decode(message).data
            except msgspec.DecodeError:
                continue  # not an event envelope, so there is nothing to react to
            if event.type == "robot_connected" and event.robot_id is not None:
                await self._connected(event.robot_id)

    async def _connected(self, robot_id: str) -> None:
        for hook in self.connect_hooks:
            try:
                await hook(robot_id)
            except Exception:
                logger.exception(
                    "lifecycle_connect_hook_failed", extra={"robot_id": robot_id}
                )
