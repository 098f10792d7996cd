"""In-memory progress of the missions running in this process.

The ingest pipeline calls :meth:`MissionTracker.observe` for every accepted
state, so it only does arithmetic: it adds up the distance driven and reports
when the robot is within tolerance of its current waypoint. The database
holds the durable copy (current waypoint, distance); :class:`MissionService`
writes it at each waypoint and rebuilds the tracker from it at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleethub.missions.store import Mission, MissionStatus, Waypoint
from fleethub.protocol import RobotState

# Position jumps longer than this between two states (a relocalisation, a
# robot carried elsewhere) are not counted as distance driven.
MAX_STEP_M = 5.0


@dataclass
class TrackedMission:
    """A running mission as the tracker follows it."""

    mission_id: str
    robot_id: str
    waypoints: list[Waypoint]
    status: MissionStatus
    index: int = 0
    distance_m: float = 0.0
    last_position: tuple[float, float] | None = None
    step_command_id: str | None = None
    task_command_id: str | None = None
    # True from "waypoint reached" until the next waypoint's command is issued,
    # so one arrival is reported once.
    advancing: bool = False
    # True once a failure is scheduled, so later states do not schedule another.
    ending: bool = False

    @classmethod
    def from_mission(cls, mission: Mission) -> TrackedMission:
        assert mission.robot_id is not None
        return cls(
            mission_id=mission.mission_id,
            robot_id=mission.robot_id,
            waypoints=mission.waypoints,
            status=mission.status,
            index=mission.current_waypoint,
            distance_m=mission.distance_m,
        )

    @property
    def current(self) -> Waypoint | None:
        """The waypoint the robot is driving to, or None after the last one."""
        return self.waypoints[self.index] if self.index < len(self.waypoints) else None


class MissionTracker:
    """Running missions by robot id, at most one per robot."""

    def __init__(self) -> None:
        self._by_robot: dict[str, TrackedMission] = {}

    def add(self, tracked: TrackedMission) -> None:
        self._by_robot[tracked.robot_id] = tracked

    def remove(self, mission_id: str) -> TrackedMission | None:
        tracked = self.by_mission(mission_id)
        if tracked is not None:
            del self._by_robot[tracked.robot_id]
        return tracked

    def for_robot(self, robot_id: str) -> TrackedMission | None:
        return self._by_robot.get(robot_id)

    def by_mission(self, mission_id: str) -> TrackedMission | None:
        for tracked in self._by_robot.values():
            if tracked.mission_id == mission_id:
                return tracked
        return None

    def busy_robots(self) -> set[str]:
        """Return the robots that have a mission running."""
        return set(self._by_robot)

    def observe(self, tracked: TrackedMission, state: RobotState) -> bool:
        """Add the distance since the last state; return whether a waypoint was reached.

        Returns True once per waypoint: the caller must issue the next step,
        which clears ``advancing``.
        """
        position = (state.position.x, state.position.y)
        if tracked.last_position is not None:
            step = math.dist(tracked.last_position, position)
            if step <= MAX_STEP_M:
                tracked.distance_m += step
        tracked.last_position = position
        waypoint = tracked.current
        if waypoint is None or tracked.advancing or tracked.task_command_id:
            return False
        if math.dist(position, (waypoint.x, waypoint.y)) > waypoint.tolerance:
            return False
        tracked.advancing = True
        return True
