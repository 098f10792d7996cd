"""The mission lifecycle: queue, assign, drive waypoint by waypoint, finish.

A mission is driven as successive ``go_to`` commands through the command
service, one per waypoint, so it inherits durable queueing, ordered delivery
and resending from commands, and works with any robot that understands
``go_to``. Progress comes from the robot's states: a waypoint is reached when
the reported position is within its tolerance. A waypoint's task is sent as
one more command once the waypoint is reached, and the mission goes on when
that command succeeds.

All changes to missions run under one lock. The hooks called from the ingest
pipeline and the command service (:meth:`observe_state`,
:meth:`observe_command`) never wait: they schedule the work as a task.

NOTE: running missions are tracked in this process's memory, so with several
API processes a robot's states must reach the process that assigned its
mission; a shared tracker is needed before missions scale out.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from fleethub.commands.service import CommandService, Emit
from fleethub.commands.store import Command, CommandStatus, Transition
from fleethub.errors import Conflict, FleethubError, NotFound
from fleethub.live.base import LiveState
from fleethub.missions.assignment import choose_robot
from fleethub.missions.store import (
    OPEN_MISSION_STATUSES,
    RUNNING_MISSION_STATUSES,
    Mission,
    MissionStatus,
    MissionStore,
)
from fleethub.missions.tracker import MissionTracker, TrackedMission
from fleethub.missions.validation import build_waypoints, check_deadline, check_timeout
from fleethub.models import Event, Severity, utcnow
from fleethub.protocol import RobotState, RobotStatus
from fleethub.settings import Settings

logger = logging.getLogger(__name__)

# Mission steps overtake routine commands (priority 0) queued for the robot.
MISSION_COMMAND_PRIORITY = 50
STOP_PRIORITY = 100
OPEN = tuple(OPEN_MISSION_STATUSES)
_FAILED_COMMAND = {CommandStatus.FAILED, CommandStatus.REJECTED, CommandStatus.EXPIRED}


class MissionService:
    """Create, assign, track, time out and cancel missions."""

    def __init__(
        self,
        store: MissionStore,
        commands: CommandService,
        live: LiveState,
        emit: Emit,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.commands = commands
        self.live = live
        self.settings = settings
        self.clock = clock
        self.tracker = MissionTracker()
        self._emit = emit
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = True  # unknown until the first dispatch
        self._dispatch_scheduled = False
        self._last_status: dict[str, RobotStatus] = {}

    # Lifecycle, called by the composition root.

    async def start(self) -> None:
        """Rebuild the tracker from the running missions in the database."""
        for mission in await self.store.running_missions():
            self.tracker.add(TrackedMission.from_mission(mission))
        logger.info(
            "missions_resumed", extra={"count": len(self.tracker.busy_robots())}
        )

    async def stop(self) -> None:
        """Cancel the scheduled work and wait for it to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Operator requests.

    async def create(
        self,
        waypoints: list[dict[str, Any]],
        *,
        robot_id: str | None = None,
        priority: int = 0,
        deadline: datetime | None = None,
        timeout_s: float | None = None,
    ) -> Mission:
        """Validate and store a mission as ``pending``, then try to assign it."""
        now = self.clock()
        parsed = build_waypoints(
            waypoints,
            self.settings.mission_default_tolerance_m,
            self.settings.mission_max_waypoints,
        )
        check_deadline(deadline, now)
        timeout_s = (
            self.settings.mission_default_timeout_s if timeout_s is None else timeout_s
        )
        check_timeout(timeout_s)
        if robot_id is not None and not await self.commands.store.robot_exists(
            robot_id
        ):
            raise NotFound(
                f"Robot {robot_id!r} is not known.",
                code="robot_not_found",
                robot_id=robot_id,
            )
        mission = Mission(
            mission_id=str(uuid.uuid4()),
            status=MissionStatus.PENDING,
            waypoints=parsed,
            priority=priority,
            timeout_s=timeout_s,
            created_at=now,
            updated_at=now,
            requested_robot_id=robot_id,
            deadline=deadline,
        )
        mission = await self.store.insert_mission(mission)
        await self._publish("mission_created", mission)
        self._pending = True
        await self.dispatch()
        return await self.get(mission.mission_id)

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

    async def history(self, mission_id: str) -> list[Transition]:
        """Return the mission's transitions, oldest first."""
        return await self.commands.store.transitions("mission", mission_id)

    async def list_missions(
        self,
        statuses: Sequence[MissionStatus] = (),
        robot_id: str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[Mission]:
        """Return matching missions, newest first."""
        return await self.store.list_missions(
            statuses=statuses, robot_id=robot_id, limit=limit, before_seq=before_seq
        )

    async def cancel(self, mission_id: str) -> Mission:
        """Cancel an unfinished mission and tell its robot to stop.

        Raises :class:`Conflict` (``mission_already_finished``) when it is over.
        """
        async with self._lock:
            mission = await self.get(mission_id)
            if mission.status.finished:
                raise Conflict(
                    f"Mission {mission_id!r} is already {mission.status.value}.",
                    code="mission_already_finished",
                    mission_id=mission_id,
                    status=mission.status.value,
                )
            finished = await self._finish(
                mission,
                MissionStatus.CANCELLED,
                "cancelled",
                "Cancelled by an operator.",
            )
        return finished or await self.get(mission_id)

    # Assignment.

    async def dispatch(self) -> None:
        """Assign pending missions to eligible robots, by priority then age."""
        async with self._lock:
            self._dispatch_scheduled = False
            pending = await self.store.pending_missions()
            self._pending = bool(pending)
            if not pending:
                return
            snapshots = await self.live.all()
            busy = self.tracker.busy_robots()
            reserve = self.settings.mission_battery_reserve_percent
            for mission in pending:
                robot_id = choose_robot(mission, snapshots, busy, reserve)
                if robot_id is not None and await self._assign(mission, robot_id):
                    busy.add(robot_id)

    async def _assign(self, mission: Mission, robot_id: str) -> bool:
        snapshot = await self.live.get(robot_id)
        now = self.clock()
        assigned = await self.store.update_mission(
            mission.mission_id,
            (MissionStatus.PENDING,),
            now,
            to_status=MissionStatus.ASSIGNED,
            robot_id=robot_id,
            assigned_at=now,
        )
        if assigned is None:
            return False
        tracked = TrackedMission.from_mission(assigned)
        if snapshot is not None and snapshot.state is not None:
            # Distance driven counts from where the robot was when assigned.
            position = snapshot.state.position
            tracked.last_position = (position.x, position.y)
        self.tracker.add(tracked)
        await self._publish("mission_assigned", assigned)
        await self._issue_step(tracked)
        return True

    async def _issue_step(self, tracked: TrackedMission) -> None:
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

    # Hooks from the ingest pipeline, the command service and the robot link.

    def observe_state(self, robot_id: str, state: RobotState) -> None:
        """Follow a running mission, or dispatch when an idle robot could take one."""
        previous = self._last_status.get(robot_id)
        self._last_status[robot_id] = state.status
        tracked = self.tracker.for_robot(robot_id)
        if tracked is None:
            # Only a robot that just became idle triggers a dispatch; the
            # periodic sweep covers every other change (battery, presence).
            became_idle = previous is not RobotStatus.IDLE
            if became_idle and self._pending and self._may_take(state):
                self._schedule_dispatch()
            return
        if tracked.ending:
            return
        if state.status is RobotStatus.ERROR:
            tracked.ending = True
            message = state.error_message or "The robot reported an error."
            self._spawn(
                self._fail_if_running(tracked.mission_id, "robot_error", message)
            )
            return
        if self.tracker.observe(tracked, state):
            self._spawn(self._reach(tracked.mission_id, tracked.index))

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._spawn(self.dispatch())

    def _may_take(self, state: RobotState) -> bool:
        reserve = self.settings.mission_battery_reserve_percent
        return (
            state.status is RobotStatus.IDLE
            and state.battery is not None
            and state.battery > reserve
        )

    def observe_command(self, command: Command) -> None:
        """React to a status change of a command sent for a mission."""
        if command.mission_id is None:
            return
        tracked = self.tracker.by_mission(command.mission_id)
        if tracked is None:
            return
        if command.status in (CommandStatus.ACKNOWLEDGED, CommandStatus.SUCCEEDED):
            self._spawn(self._activate(tracked.mission_id))
            if command.command_id == tracked.task_command_id:
                if command.status is CommandStatus.SUCCEEDED:
                    self._spawn(self._task_done(tracked.mission_id, command.command_id))
        elif command.status in _FAILED_COMMAND:
            message = (
                f"Command {command.type!r} {command.status.value}: {command.message}"
            )
            reason = f"command_{command.status.value}"
            self._spawn(self._fail_if_running(tracked.mission_id, reason, message))

    async def robot_connected(self, robot_id: str) -> None:
        """Resume the robot's running mission after a reconnect.

        The current step is sent again when its command already finished, so a
        robot that restarted and forgot its goal picks up where it was.
        """
        async with self._lock:
            tracked = self.tracker.for_robot(robot_id)
            if tracked is None or tracked.advancing or tracked.task_command_id:
                return
            step = tracked.step_command_id
            if step is not None and not (await self.commands.get(step)).status.finished:
                return
            await self._issue_step(tracked)

    # Progress.

    async def _activate(self, mission_id: str) -> None:
        async with self._lock:
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
            await self._publish("mission_started", mission)

    async def _reach(self, mission_id: str, index: int) -> None:
        async with self._lock:
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
            await self._publish("waypoint_reached", mission, index=index)
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
        async with self._lock:
            tracked = self.tracker.by_mission(mission_id)
            if tracked is None or tracked.task_command_id != command_id:
                return
            tracked.task_command_id = None
            await self._advance(tracked, await self.get(mission_id))

    async def _advance(self, tracked: TrackedMission, mission: Mission) -> None:
        if tracked.current is not None:
            await self._issue_step(tracked)
            return
        await self._finish(mission, MissionStatus.COMPLETED, None, None)

    # Endings.

    async def _fail_if_running(
        self, mission_id: str, reason: str, message: str
    ) -> None:
        async with self._lock:
            mission = await self.get(mission_id)
            if not mission.status.finished:
                await self._finish(mission, MissionStatus.FAILED, reason, message)

    async def _finish(
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
        await self._publish(f"mission_{status.value}", finished)
        self._pending = True
        self._schedule_dispatch()
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

    async def sweep(self, now: datetime | None = None) -> None:
        """Time out missions past their timeout or deadline, then dispatch.

        The timeout runs from assignment, and a robot that disconnects keeps
        its mission until then. The deadline applies to pending missions too.
        """
        now = now or self.clock()
        async with self._lock:
            missions = await self.store.pending_missions()
            missions += await self.store.running_missions()
            for mission in missions:
                reason = _overdue(mission, now)
                if reason is not None:
                    message = f"The mission passed its {reason} at {now.isoformat()}."
                    await self._finish(
                        mission, MissionStatus.TIMED_OUT, reason, message
                    )
        await self.dispatch()

    async def _publish(self, event_type: str, mission: Mission, **extra: Any) -> None:
        severity = (
            Severity.WARNING
            if mission.status in (MissionStatus.FAILED, MissionStatus.TIMED_OUT)
            else Severity.INFO
        )
        data = {**mission_summary(mission), **extra}
        await self._emit(
            Event(
                type=event_type,
                robot_id=mission.robot_id,
                severity=severity,
                timestamp=mission.updated_at,
                data=data,
            )
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(_logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _overdue(mission: Mission, now: datetime) -> str | None:
    if mission.deadline is not None and mission.deadline <= now:
        return "deadline"
    if mission.assigned_at is not None:
        if mission.assigned_at + timedelta(seconds=mission.timeout_s) <= now:
            return "timeout"
    return None


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


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except FleethubError as exc:
        logger.warning(
            "mission_step_failed", extra={"error": exc.message, "code": exc.code}
        )
    except Exception:
        logger.exception("mission_step_crashed")
