"""Deliver operator commands to connected robots and take their responses."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fleethub.errors import RobotNotConnected
from fleethub.models import Event, utcnow
from fleethub.protocol import CommandResult
from fleethub.transports.registry import LinkRegistry

logger = logging.getLogger(__name__)


class CommandService:
    """Send commands over the robot's live link; report its answers as events."""

    def __init__(self, links: LinkRegistry, emit: Any) -> None:
        self.links = links
        self._emit = emit

    async def send(self, robot_id: str, command_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Deliver a command now, or raise :class:`RobotNotConnected`."""
        link = self.links.get(robot_id)
        if link is None:
            raise RobotNotConnected(
                f"Robot {robot_id!r} is not connected; commands need a live link.",
                robot_id=robot_id,
            )
        command = {
            "command_id": str(uuid.uuid4()),
            "type": command_type,
            "params": params,
            "created_at": utcnow().isoformat(),
        }
        link.send_command(command)
        logger.info("command_sent", extra={"robot_id": robot_id, "command_id": command["command_id"]})
        return {**command, "robot_id": robot_id, "status": "sent"}

    async def handle_response(self, robot_id: str, result: CommandResult) -> None:
        """Publish the robot's answer to a command as a ``command_response`` event."""
        await self._emit(
            Event(
                type="command_response",
                robot_id=robot_id,
                data={
                    "command_id": result.command_id,
                    "status": result.status,
                    "message": result.message,
                },
            )
        )
