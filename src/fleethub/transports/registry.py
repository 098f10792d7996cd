"""Which robots have a live link to this process."""

from __future__ import annotations

from typing import Any, Protocol


class RobotLink(Protocol):
    """A live connection to one robot, whatever the transport."""

    robot_id: str

    def send_command(self, payload: dict[str, Any]) -> None:
        """Queue a command frame for the robot without waiting."""

    async def close(self, code: int, reason: str) -> None:
        """Close the link."""


class LinkRegistry:
    """The robot links held by this process, one per robot id."""

    def __init__(self) -> None:
        self._links: dict[str, RobotLink] = {}

    def register(self, link: RobotLink) -> RobotLink | None:
        """Make ``link`` the robot's link; return the one it replaces, if any."""
        previous = self._links.get(link.robot_id)
        self._links[link.robot_id] = link
        return previous

    def unregister(self, link: RobotLink) -> bool:
        """Remove ``link`` if it is still current; return whether it was."""
        if self._links.get(link.robot_id) is link:
            del self._links[link.robot_id]
            return True
        return False

    def get(self, robot_id: str) -> RobotLink | None:
        return self._links.get(robot_id)

    def __len__(self) -> int:
        return len(self._links)

    def robot_ids(self) -> list[str]:
        return sorted(self._links)
