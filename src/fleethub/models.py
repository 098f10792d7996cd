"""Domain records shared by the core parts (storage, bus, ingest, API)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from fleethub.protocol import (
    Lidar,
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    Velocity,
)


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class TelemetryRow(NamedTuple):
    """One stored state, in the column order of the ``telemetry`` table."""

    robot_id: str
    ts: datetime
    x: float
    y: float
    z: float
    roll: float
    pitch: float
    yaw: float
    linear: float
    angular: float
    battery: float | None
    status: str
    min_range: float | None
    lidar_ranges: list[float] | None

    @classmethod
    def from_state(cls, robot_id: str, state: RobotState) -> TelemetryRow:
        """Flatten a validated state into a row."""
        lidar = state.lidar
        timestamp = state.timestamp
        return cls(
            robot_id,
            # Robots mostly send UTC already; astimezone would still copy it.
            timestamp if timestamp.tzinfo is UTC else timestamp.astimezone(UTC),
            state.position.x,
            state.position.y,
            state.position.z,
            state.orientation.roll,
            state.orientation.pitch,
            state.orientation.yaw,
            state.velocity.linear,
            state.velocity.angular,
            state.battery,
            state.status.value,
            lidar.min_valid_range() if lidar is not None else None,
            lidar.ranges if lidar is not None else None,
        )

    def to_state(self) -> RobotState:
        """Rebuild the robot state this row was stored from."""
        lidar = (
            Lidar(ranges=self.lidar_ranges) if self.lidar_ranges is not None else None
        )
        return RobotState(
            timestamp=self.ts,
            position=Position(x=self.x, y=self.y, z=self.z),
            orientation=Orientation(yaw=self.yaw, roll=self.roll, pitch=self.pitch),
            velocity=Velocity(linear=self.linear, angular=self.angular),
            status=RobotStatus(self.status),
            battery=self.battery,
            lidar=lidar,
        )


class Severity(enum.StrEnum):
    """Urgency of an event."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Event(msgspec.Struct, kw_only=True):
    """Something that happened in the fleet, stored and published on the bus."""

    type: str
    robot_id: str | None
    severity: Severity = Severity.INFO
    timestamp: datetime = msgspec.field(default_factory=utcnow)
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    event_id: str = msgspec.field(default_factory=lambda: str(uuid.uuid4()))


class StoredEvent(msgspec.Struct, kw_only=True):
    """An event read back from storage, with its database id for paging."""

    id: int
    event_id: str
    type: str
    robot_id: str | None
    severity: str
    timestamp: datetime
    data: dict[str, Any]


class Analytics(msgspec.Struct, kw_only=True):
    """Aggregates over one robot's telemetry in a time range."""

    robot_id: str
    start: datetime | None
    end: datetime | None
    samples: int
    distance_m: float
    avg_linear_velocity_mps: float | None
    operating_hours: float
    charging_cycles: int
    avg_battery: float | None
    first_sample_at: datetime | None
    last_sample_at: datetime | None
