"""Simulated differential-drive robots with a battery and a charging dock.

Each robot drives between random waypoints inside a square site at a
plausible speed (or, with ``wander`` off, waits idle for work), drains its
battery while moving, returns to its dock below a reserve and charges there.
``time_scale`` speeds the battery up (not the motion) so that a short demo
still shows charging cycles.

Commands a simulated robot understands: ``stop`` (hold still until a new
goal), ``go_to`` with ``x`` and ``y``, and ``charge`` (drive to the dock).
fleethub drives a mission as one ``go_to`` per waypoint, so a simulated robot
executes missions with these commands alone.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import Any

from fleethub.client.robot import RobotClient
from fleethub.models import utcnow
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity


@dataclass
class SimConfig:
    """Behaviour settings of a simulated robot."""

    rate_hz: float = 5.0
    site_size_m: float = 30.0
    speed_mps: float = 0.8
    turn_rate_rps: float = 1.2
    drain_percent_per_s: float = 0.05
    idle_drain_percent_per_s: float = 0.005
    charge_percent_per_s: float = 0.5
    reserve_percent: float = 25.0
    full_percent: float = 95.0
    time_scale: float = 1.0
    arrive_tolerance_m: float = 0.2
    # Off: an idle robot stays still until a command (or a mission) moves it.
    wander: bool = True


@dataclass
class SimulatedRobot:
    """The kinematic and battery model of one robot."""

    robot_id: str
    config: SimConfig
    rng: random.Random
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    battery: float = 100.0
    dock: tuple[float, float] = (0.0, 0.0)
    goal: tuple[float, float] | None = None
    status: RobotStatus = RobotStatus.IDLE
    linear: float = 0.0
    angular: float = 0.0
    held: bool = False
    resume_goal: tuple[float, float] | None = None
    charging_cycles: int = field(default=0)

    def step(self, dt: float) -> None:
        """Advance the model by ``dt`` seconds."""
        if self.status is RobotStatus.CHARGING:
            self._charge(dt)
            return
        if self.battery < self.config.reserve_percent and self.goal != self.dock:
            # Charge first, then drive on to the goal that was interrupted.
            self.resume_goal = self.goal
            self.goal = self.dock
            self.held = False
        if self.goal is None and not self.held and self.config.wander:
            self.goal = self._random_point()
        if self.goal is None:
            self._hold(dt)
            return
        self._drive(dt)

    def _random_point(self) -> tuple[float, float]:
        half = self.config.site_size_m / 2
        return (self.rng.uniform(-half, half), self.rng.uniform(-half, half))

    def _hold(self, dt: float) -> None:
        self.linear = self.angular = 0.0
        self.status = RobotStatus.IDLE
        self._drain(self.config.idle_drain_percent_per_s * dt)

    def _drive(self, dt: float) -> None:
        assert self.goal is not None
        dx, dy = self.goal[0] - self.x, self.goal[1] - self.y
        distance = math.hypot(dx, dy)
        if distance <= self.config.arrive_tolerance_m:
            self._arrive()
            return
        heading_error = _wrap(math.atan2(dy, dx) - self.yaw)
        max_turn = self.config.turn_rate_rps * dt
        turn = max(-max_turn, min(max_turn, heading_error))
        self.angular = turn / dt
        self.yaw = _wrap(self.yaw + turn)
        # Slow down while turning hard and when close to the goal.
        self.linear = min(
            self.config.speed_mps * max(0.0, math.cos(heading_error)), distance / dt
        )
        self.x += self.linear * math.cos(self.yaw) * dt
        self.y += self.linear * math.sin(self.yaw) * dt
        self.status = RobotStatus.MOVING
        self._drain(self.config.drain_percent_per_s * dt)

    def _arrive(self) -> None:
        self.linear = self.angular = 0.0
        if self.goal == self.dock and self.battery < self.config.full_percent:
            self.status = RobotStatus.CHARGING
            self.charging_cycles += 1
        else:
            self.status = RobotStatus.IDLE
        self.goal = None

    def _charge(self, dt: float) -> None:
        self.linear = self.angular = 0.0
        self.battery = min(
            100.0,
            self.battery
            + self.config.charge_percent_per_s * dt * self.config.time_scale,
        )
        if self.battery >= self.config.full_percent:
            self.status = RobotStatus.IDLE
            self.goal, self.resume_goal = self.resume_goal, None

    def _drain(self, amount: float) -> None:
        self.battery = max(0.0, self.battery - amount * self.config.time_scale)

    def state(self) -> RobotState:
        """Return the robot's current state, stamped now."""
        return RobotState(
            timestamp=utcnow(),
            position=Position(x=self.x, y=self.y),
            orientation=Orientation(yaw=self.yaw),
            velocity=Velocity(linear=self.linear, angular=self.angular),
            status=self.status,
            battery=round(self.battery, 3),
        )

    async def handle_command(self, command: dict[str, Any]) -> tuple[str, str | None]:
        """Carry out a command from the server."""
        kind = command.get("type")
        params = command.get("params") or {}
        if kind == "stop":
            self.goal, self.resume_goal, self.held = None, None, True
            return "succeeded", None
        if kind == "charge":
            self.goal, self.held = self.dock, False
            return "succeeded", None
        if kind == "go_to":
            try:
                goal = (float(params["x"]), float(params["y"]))
            except (KeyError, TypeError, ValueError):
                return "rejected", "go_to needs numeric 'x' and 'y'."
            if self.status is RobotStatus.CHARGING:
                self.resume_goal = goal  # driven to once charged
            else:
                self.goal = goal
            self.held = False
            return "succeeded", None
        return "rejected", f"Unknown command type {kind!r}."


def _wrap(angle: float) -> float:
    return math.atan2(math.sin(angle), math.cos(angle))


def make_robot(index: int, config: SimConfig, seed: int = 0) -> SimulatedRobot:
    """Create the ``index``-th robot of a fleet, with its own dock and battery."""
    rng = random.Random(seed * 1000 + index)
    dock = (-config.site_size_m / 2 + 2.0 * index, -config.site_size_m / 2)
    return SimulatedRobot(
        robot_id=f"sim-{index + 1:03d}",
        config=config,
        rng=rng,
        x=dock[0],
        y=dock[1],
        dock=dock,
        battery=rng.uniform(35.0, 100.0),
    )


async def run_robot(
    robot: SimulatedRobot,
    url: str,
    stop: asyncio.Event,
    headers: dict[str, str] | None = None,
) -> RobotClient:
    """Drive ``robot`` and stream its state until ``stop`` is set."""
    period = 1.0 / robot.config.rate_hz
    client = RobotClient(
        url, robot.robot_id, on_command=robot.handle_command, headers=headers
    )
    await client.start()
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while not stop.is_set():
            now = loop.time()
            robot.step(max(now - last, 1e-3))
            last = now
            await client.send_state(robot.state())
            try:
                await asyncio.wait_for(stop.wait(), period)
            except TimeoutError:
                pass
        await client.flush(30.0)
    finally:
        await client.close()
    return client
