"""Command routing to the process that has the robot's connection.

The command service only calls :meth:`CommandRouter.deliver`. The embedded
router hands the payload to a link in this process; a multi-process router
(for example over Redis) can replace it without changing the service.
"""

from __future__ import annotations

from typing import Any, Protocol

from fleethub.transports.registry import LinkRegistry


class CommandRouter(Protocol):
    """Deliver command payloads to connected robots."""

    async def deliver(self, robot_id: str, payload: dict[str, Any]) -> bool:
        """Queue ``payload`` on the robot's link without waiting for the robot.

        Returns False when no link for the robot is reachable, so the command
        stays queued until the robot reconnects. True means handed to a link,
        not received: the robot's ``acknowledged`` response confirms receipt.
        """


class LocalRouter:
    """:class:`CommandRouter` for links held by this process."""

    def __init__(self, links: LinkRegistry) -> None:
        self.links = links

    def holds(self, robot_id: str) -> bool:
        return self.links.get(robot_id) is not None

    async def deliver(self, robot_id: str, payload: dict[str, Any]) -> bool:
        link = self.links.get(robot_id)
        if link is None:
            return False
        link.send_command(payload)
        return True
