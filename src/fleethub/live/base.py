"""The live-state interface and its record type."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec

from fleethub.protocol import RobotState


class RobotSnapshot(msgspec.Struct, kw_only=True):
    """What fleethub knows about a robot right now."""

    robot_id: str
    online: bool
    last_seen: datetime | None = None
    state: RobotState | None = None
    node_id: str | None = None


class LiveState(Protocol):
    """Latest state and presence per robot, readable from any process.

    ``update`` is called for every accepted state, so implementations must
    not block: a networked one may coalesce writes and flush them later.
    """

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def update(self, robot_id: str, state: RobotState, seen_at: datetime) -> None:
        """Record the robot's newest state and when it arrived."""

    async def set_online(self, robot_id: str, node_id: str, seen_at: datetime) -> None:
        """Mark the robot connected to the process ``node_id``."""

    async def set_offline(self, robot_id: str, node_id: str) -> None:
        """Mark the robot disconnected, unless another process took it over."""

    async def get(self, robot_id: str) -> RobotSnapshot | None:
        """Return the robot's snapshot, or None if it was never seen."""

    async def all(self) -> list[RobotSnapshot]:
        """Return every robot's snapshot, sorted by robot id."""
