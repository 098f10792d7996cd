"""Which robot gets a mission.

A robot is eligible when it is online, reports ``idle``, reports a battery
level above the reserve and has no mission running. The eligible robot
nearest (straight-line distance) to the mission's first waypoint wins. Ties go
to the smaller robot id, so the choice is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from fleethub.live.base import RobotSnapshot
from fleethub.missions.store import Mission
from fleethub.protocol import RobotStatus


def is_eligible(snapshot: RobotSnapshot | None, reserve_percent: float) -> bool:
    """Return whether the robot could start a mission now."""
    if snapshot is None or not snapshot.online or snapshot.state is None:
        return False
    state = snapshot.state
    if state.status is not RobotStatus.IDLE:
        return False
    # A robot that reports no battery level cannot be shown to have enough.
    return state.battery is not None and state.battery > reserve_percent


def choose_robot(
    mission: Mission,
    snapshots: Iterable[RobotSnapshot],
    busy: set[str],
    reserve_percent: float,
) -> str | None:
    """Return the robot to assign ``mission`` to, or None when none is eligible."""
    candidates = [
        snapshot
        for snapshot in snapshots
        if snapshot.robot_id not in busy and is_eligible(snapshot, reserve_percent)
    ]
    if mission.requested_robot_id is not None:
        candidates = [c for c in candidates if c.robot_id == mission.requested_robot_id]
    if not candidates:
        return None
    first = mission.waypoints[0]

    def distance(snapshot: RobotSnapshot) -> tuple[float, str]:
        assert snapshot.state is not None
        position = snapshot.state.position
        return math.hypot(position.x - first.x, position.y - first.y), snapshot.robot_id

    return min(candidates, key=distance).robot_id
