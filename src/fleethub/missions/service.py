"""The mission lifecycle: queue, assign, drive waypoint by waypoint, finish.

A mission is driven as successive ``go_to`` commands through the command
service, one per waypoint, so it inherits durable queueing, ordered delivery
and resending from commands, and works with any robot that understands
``go_to``. Progress comes from the robot's states: a waypoint is reached when
the reported position is within its tolerance. A waypoint's task is sent as
one more command once the waypoint is reached, and the mission goes on when
that command succeeds.

This module queues and assigns missions, and :mod:`fleethub.missions.progress`
drives them once assigned. All changes to missions run under one lock. The
hooks called from the ingest pipeline and the command service
(:meth:`MissionService.observe_state`, :meth:`MissionProgress.observe_command`)
never wait: they schedule the work as a task.

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
from fleethub.commands.store import Transition
from fleethub.errors import Conflict, FleethubError, NotFound
from fleethub.live.base import LiveState
from fleethub.missions.assignment import choose_robot
from fleethub.missions.progress import MissionProgress
from fleethub.missions.store import Mission, MissionStatus, MissionStore
from fleethub.missions.tracker import TrackedMission
from fleethub.missions.validation import build_waypoints, check_deadline, check_timeout
from fleethub.models import utcnow
from fleethub.protocol import RobotState, RobotStatus
from fleethub.settings import Settings

logger = logging.getLogger(__name__)


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
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = True  # unknown until the first dispatch
        self._dispatch_scheduled = False
        self._last_status: dict[str, RobotStatus] = {}
        self.progress = MissionProgress(
            store,
            commands,
            emit,
            settings,
            clock,
            self._lock,
            self._spawn,
            self._robot_freed,
        )
        self.tracker = self.progress.tracker
        self.observe_command = self.progress.observe_command
        self.robot_connected = self.progress.robot_connected

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
        if timeout_s is None:
            timeout_s = self.settings.mission_default_timeout_s
        check_timeout(timeout_s)
        if robot_id is not None:
            await self._check_robot(robot_id)

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
        await self.progress.publish("mission_created", mission)
        self._pending = True
        await self.dispatch()
        return await self.get(mission.mission_id)

    async def _check_robot(self, robot_id: str) -> None:
        if not await self.commands.store.robot_exists(robot_id):
            raise NotFound(
                f"Robot {robot_id!r} is not known.",
                code="robot_not_found",
                robot_id=robot_id,
            )

    async def get(self, mission_id: str) -> Mission:
        """Return the mission, or raise :class:`NotFound` (``mission_not_found``)."""
        return await self.progress.get(mission_id)

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
            finished = await self.progress.finish(
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
        await self.progress.publish("mission_assigned", assigned)
        await self.progress.issue_step(tracked)
        return True

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
        self.progress.observe(tracked, state)

    def _robot_freed(self) -> None:
        self._pending = True
        self._schedule_dispatch()

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
                    await self.progress.finish(
                        mission, MissionStatus.TIMED_OUT, reason, message
                    )
        await self.dispatch()

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


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except FleethubError as exc:
        logger.warning(
            "mission_step_failed", extra={"error": exc.message, "code": exc.code}
        )
    except Exception:
        logger.exception("mission_step_crashed")
