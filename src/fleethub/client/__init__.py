"""The robot-side client library."""

from fleethub.client.robot import CommandHandler, RobotClient

__all__ = ["CommandHandler", "RobotClient"]
