"""Live state in a dict, for a single process."""

from __future__ import annotations

from datetime import datetime

from fleethub.live.base import RobotSnapshot
from fleethub.protocol import RobotState


class MemoryLiveState:
    """:class:`fleethub.live.base.LiveState` held in this process's memory."""

    def __init__(self) -> None:
        self._robots: dict[str, RobotSnapshot] = {}

    async def close(self) -> None:
        self._robots.clear()

    async def update(self, robot_id: str, state: RobotState, seen_at: datetime) -> None:
        snapshot = self._robots.get(robot_id)
        if snapshot is None:
            snapshot = self._robots[robot_id] = RobotSnapshot(
                robot_id=robot_id, online=True
            )
        snapshot.state = state
        snapshot.last_seen = seen_at

    async def set_online(self, robot_id: str, node_id: str, seen_at: datetime) -> None:
        snapshot = self._robots.setdefault(
            robot_id, RobotSnapshot(robot_id=robot_id, online=True)
        )
        snapshot.online = True
        snapshot.node_id = node_id
        snapshot.last_seen = seen_at

    async def set_offline(self, robot_id: str, node_id: str) -> None:
        snapshot = self._robots.get(robot_id)
        if snapshot is not None and snapshot.node_id == node_id:
            snapshot.online = False
            snapshot.node_id = None

    async def get(self, robot_id: str) -> RobotSnapshot | None:
        return self._robots.get(robot_id)

    async def all(self) -> list[RobotSnapshot]:
        return [self._robots[key] for key in sorted(self._robots)]
