"""Running missions: steps, waypoint arrivals, tasks and endings.

:class:`MissionProgress` drives each assigned mission as successive ``go_to``
commands, one per waypoint, and moves it through ``active`` to a final status.
It shares the mission service's lock, so every change to a mission runs under
one lock, and its hooks schedule work as tasks instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fleethub.commands.service import CommandService, Emit
from fleethub.commands.store import Command, CommandStatus
from fleethub.errors import Conflict, NotFound
from fleethub.missions.store import (
    OPEN_MISSION_STATUSES,
    RUNNING_MISSION_STATUSES,
    Mission,
    MissionStatus,
    MissionStore,
)
from fleethub.missions.tracker import MissionTracker, TrackedMission
from fleethub.models import Event, Severity
from fleethub.protocol import RobotState, RobotStatus
from fleethub.settings import Settings

logger = logging.getLogger(__name__)

# Mission steps overtake routine commands (priority 0) queued for the robot.
MISSION_COMMAND_PRIORITY = 50
STOP_PRIORITY = 100
OPEN = tuple(OPEN_MISSION_STATUSES)
_FAILED_COMMAND = {CommandStatus.FAILED, CommandStatus.REJECTED, CommandStatus.EXPIRED}

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class MissionProgress:
    """Follow and advance the missions that have a robot."""

    def __init__(
        self,
        store: MissionStore,
        commands: CommandService,
        emit: Emit,
        settings: Settings,
        clock: Callable[[], datetime],
        lock: asyncio.Lock,
        spawn: Spawn,
        robot_freed: Callable[[], None],
    ) -> None:
        self.store = store
        self.commands = commands
        self.emit = emit
        self.settings = settings
        self.clock = clock
        self.lock = lock
        self.spawn = spawn
        # Called when a mission ends, so a pending one can take the robot.
        self.robot_freed = robot_freed
        self.tracker = MissionTracker()

    def observe(self, tracked: TrackedMission, state: RobotState) -> None:
        """Follow the robot of a running mission: distance, arrivals, errors."""
        if tracked.ending:
            return
        if state.status is RobotStatus.ERROR:
            tracked.ending = True
            message = state.error_message or "The robot reported an error."
            self.spawn(self.fail_if_running(tracked.mission_id, "robot_error", message))
            return
        if self.tracker.observe(tracked, state):
            self.spawn(self.reach(tracked.mission_id, tracked.index))

    async def get(self, mission_id: str) -> Mission:
        """Return the mission, or raise :class:`NotFound` (``mission_not_found``)."""
        mission = await self.store.get_mission(mission_id)
        if mission is None:
            raise NotFound(
                f"Mission {mission_id!r} is not known.",
                code="mission_not_found",
                mission_id=mission_id,
            )
        return mission

    async def issue_step(self, tracked: TrackedMission) -> None:
        """Send the go_to command for the tracked mission's current waypoint."""
        waypoint = tracked.current
        assert waypoint is not None
        params: dict[str, Any] = {"x": waypoint.x, "y": waypoint.y}
        if waypoint.yaw is not None:
            params["yaw"] = waypoint.yaw
        # The mission's own timeout ends it (and cancels this command), so the
        # command may wait for delivery as long as commands are allowed to.
        command, _ = await self.commands.submit(
            tracked.robot_id,
            "go_to",
            params,
            priority=MISSION_COMMAND_PRIORITY,
            ttl_s=self.settings.command_max_ttl_s,
            mission_id=tracked.mission_id,
        )
        tracked.step_command_id = command.command_id
        tracked.advancing = False

    def observe_command(self, command: Command) -> None:
        """React to a status change of a command sent for a mission."""
        if command.mission_id is None:
            return
        tracked = self.tracker.by_mission(command.mission_id)
        if tracked is None:
            return
        if command.status in (CommandStatus.ACKNOWLEDGED, CommandStatus.SUCCEEDED):
            self.spawn(self._activate(tracked.mission_id))
            if command.command_id == tracked.task_command_id:
                if command.status is CommandStatus.SUCCEEDED:
                    self.spawn(self._task_done(tracked.mission_id, command.command_id))
        elif command.status in _FAILED_COMMAND:
            message = (
                f"Command {command.type!r} {command.status.value}: {command.message}"
            )
            reason = f"command_{command.status.value}"
            self.spawn(self.fail_if_running(tracked.mission_id, reason, message))

    async def robot_connected(self, robot_id: str) -> None:
        """Resume the robot's running mission after a reconnect.

        The current step is sent again when its command already finished, so a
        robot that restarted and forgot its goal picks up where it was.
        """
        async with self.lock:
            tracked = self.tracker.for_robot(robot_id)
            if tracked is None or tracked.advancing or tracked.task_command_id:
                return
            step = tracked.step_command_id
            if step is not None and not (await self.commands.get(step)).status.finished:
                return
            await self.issue_step(tracked)

    # Progress.

    async def _activate(self, mission_id: str) -> None:
        async with self.lock:
            await self._activate_locked(mission_id)

    async def _activate_locked(self, mission_id: str) -> None:
        tracked = self.tracker.by_mission(mission_id)
        if tracked is None or tracked.status is not MissionStatus.ASSIGNED:
            return
        now = self.clock()
        mission = await self.store.update_mission(
            mission_id,
            (MissionStatus.ASSIGNED,),
            now,
            to_status=MissionStatus.ACTIVE,
            started_at=now,
        )
        tracked.status = MissionStatus.ACTIVE
        if mission is not None:
            await self.publish("mission_started", mission)

    async def reach(self, mission_id: str, index: int) -> None:
        async with self.lock:
            tracked = self.tracker.by_mission(mission_id)
            if tracked is None or tracked.index != index:
                return
            await self._activate_locked(mission_id)
            waypoint = tracked.waypoints[index]
            tracked.index = index + 1
            mission = await self.store.update_mission(
                mission_id,
                RUNNING_MISSION_STATUSES,
                self.clock(),
                current_waypoint=tracked.index,
                distance_m=tracked.distance_m,
            )
            if mission is None:
                return
            await self.publish("waypoint_reached", mission, index=index)
            if waypoint.task is not None:
                command, _ = await self.commands.submit(
                    tracked.robot_id,
                    waypoint.task.type,
                    waypoint.task.params,
                    priority=MISSION_COMMAND_PRIORITY,
                    mission_id=mission_id,
                )
                tracked.task_command_id = command.command_id
                return
            await self._advance(tracked, mission)

    async def _task_done(self, mission_id: str, command_id: str) -> None:
        async with self.lock:
            tracked = self.tracker.by_mission(mission_id)
            if tracked is None or tracked.task_command_id != command_id:
                return
            tracked.task_command_id = None
            await self._advance(tracked, await self.get(mission_id))

    async def _advance(self, tracked: TrackedMission, mission: Mission) -> None:
        if tracked.current is not None:
            await self.issue_step(tracked)
            return
        await self.finish(mission, MissionStatus.COMPLETED, None, None)

    # Endings.

    async def fail_if_running(self, mission_id: str, reason: str, message: str) -> None:
        async with self.lock:
            mission = await self.get(mission_id)
            if not mission.status.finished:
                await self.finish(mission, MissionStatus.FAILED, reason, message)

    async def finish(
        self,
        mission: Mission,
        status: MissionStatus,
        reason: str | None,
        message: str | None,
    ) -> Mission | None:
        """Move the mission to a final status; stop its robot unless it completed."""
        tracked = self.tracker.remove(mission.mission_id)
        now = self.clock()
        values: dict[str, Any] = {"finished_at": now, "failure_reason": reason}
        if tracked is not None:
            values["distance_m"] = tracked.distance_m
        finished = await self.store.update_mission(
            mission.mission_id, OPEN, now, to_status=status, message=message, **values
        )
        if finished is None:
            return None
        if tracked is not None and status is not MissionStatus.COMPLETED:
            await self._stop_robot(tracked)
        await self.publish(f"mission_{status.value}", finished)
        self.robot_freed()
        return finished

    async def _stop_robot(self, tracked: TrackedMission) -> None:
        for command_id in (tracked.step_command_id, tracked.task_command_id):
            if command_id is None:
                continue
            try:
                await self.commands.cancel(command_id, "The mission ended.")
            except Conflict:
                pass  # already delivered or finished: the stop below covers it
        await self.commands.submit(
            tracked.robot_id,
            "stop",
            {},
            priority=STOP_PRIORITY,
            mission_id=tracked.mission_id,
        )

    async def publish(self, event_type: str, mission: Mission, **extra: Any) -> None:
        severity = (
            Severity.WARNING
            if mission.status in (MissionStatus.FAILED, MissionStatus.TIMED_OUT)
            else Severity.INFO
        )
        data = {**mission_summary(mission), **extra}
        await self.emit(
            Event(
                type=event_type,
                robot_id=mission.robot_id,
                severity=severity,
                timestamp=mission.updated_at,
                data=data,
            )
        )


def mission_summary(mission: Mission) -> dict[str, Any]:
    """Return the mission's id, status, robot and metrics as event data."""
    return {
        "mission_id": mission.mission_id,
        "status": mission.status.value,
        "robot_id": mission.robot_id,
        "failure_reason": mission.failure_reason,
        "metrics": {
            "duration_s": mission.duration_s(),
            "distance_m": round(mission.distance_m, 3),
            "waypoints_reached": mission.waypoints_reached,
            "waypoints": len(mission.waypoints),
        },
    }
