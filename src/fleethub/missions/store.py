"""Mission records and the storage interface the mission service needs.

A mission moves through these states::

    pending ──▶ assigned ──▶ active ──▶ completed
       │           │           │
       └───────────┴───────────┴──▶ failed | cancelled | timed_out

``assigned`` means a robot was chosen and its first command queued;
``active`` means the robot accepted that command.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec


class MissionStatus(enum.StrEnum):
    """The lifecycle state of a mission."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        """Whether no further transition is possible."""
        return self not in OPEN_MISSION_STATUSES


OPEN_MISSION_STATUSES = frozenset(
    {MissionStatus.PENDING, MissionStatus.ASSIGNED, MissionStatus.ACTIVE}
)
RUNNING_MISSION_STATUSES = (MissionStatus.ASSIGNED, MissionStatus.ACTIVE)


class Task(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A command the robot runs once it reaches a waypoint."""

    type: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class Waypoint(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A point to reach, in metres and radians in the site's map frame.

    The waypoint counts as reached when the robot's reported position is
    within ``tolerance`` metres of ``(x, y)``. ``yaw`` is passed on to the
    robot but not checked on arrival.
    """

    x: float
    y: float
    tolerance: float
    yaw: float | None = None
    task: Task | None = None


class Mission(msgspec.Struct, kw_only=True):
    """A stored mission with its progress and metrics."""

    mission_id: str
    status: MissionStatus
    waypoints: list[Waypoint]
    priority: int
    timeout_s: float
    created_at: datetime
    updated_at: datetime
    seq: int = 0
    requested_robot_id: str | None = None
    robot_id: str | None = None
    deadline: datetime | None = None
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_waypoint: int = 0
    distance_m: float = 0.0
    failure_reason: str | None = None
    message: str | None = None

    @property
    def waypoints_reached(self) -> int:
        """Number of waypoints reached so far (they are visited in order)."""
        return self.current_waypoint

    def duration_s(self) -> float | None:
        """Seconds from assignment to the end, or None while unfinished."""
        if self.assigned_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.assigned_at).total_seconds()


class MissionStore(Protocol):
    """Durable missions; every status change is a compare-and-set as for commands."""

    async def insert_mission(self, mission: Mission) -> Mission:
        """Store a new mission with a ``pending`` transition; return it with ``seq``."""

    async def get_mission(self, mission_id: str) -> Mission | None:
        """Return the mission, or None when the id is unknown."""

    async def list_missions(
        self,
        *,
        statuses: Sequence[MissionStatus] = (),
        robot_id: str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[Mission]:
        """Return matching missions, newest first; ``before_seq`` is the cursor."""

    async def pending_missions(self) -> list[Mission]:
        """Return pending missions by priority (high first), then creation order."""

    async def running_missions(self) -> list[Mission]:
        """Return assigned and active missions."""

    async def mission_counts(self) -> dict[str, int]:
        """Return the number of missions per status."""

    async def update_mission(
        self,
        mission_id: str,
        from_statuses: Sequence[MissionStatus],
        at: datetime,
        *,
        to_status: MissionStatus | None = None,
        message: str | None = None,
        **values: Any,
    ) -> Mission | None:
        """Set ``values`` (and the status) if the mission is in ``from_statuses``.

        A status change is stored as a transition; returns None and changes
        nothing when the mission has moved on.
        """
