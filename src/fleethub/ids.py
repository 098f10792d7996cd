"""Robot identifiers: validated once at the edge, safe everywhere after that.

An id is 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, starting with a
letter or digit. That set needs no escaping in a URL path segment, an MQTT
topic level (no ``/``, ``+`` or ``#``), a log line (no control characters or
spaces) or a file name, and SQL only ever receives it as a bound parameter.
"""

from __future__ import annotations

import re

from fleethub.errors import InvalidRobotId

MAX_ROBOT_ID_LENGTH = 64
_ROBOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_robot_id(robot_id: str) -> str:
    """Return ``robot_id`` unchanged, or raise :class:`InvalidRobotId`."""
    if not robot_id:
        raise InvalidRobotId("Robot id is empty.", robot_id=robot_id)
    if len(robot_id) > MAX_ROBOT_ID_LENGTH:
        raise InvalidRobotId(
            f"Robot id is longer than {MAX_ROBOT_ID_LENGTH} characters.",
            length=len(robot_id),
        )
    if not _ROBOT_ID.fullmatch(robot_id):
        raise InvalidRobotId(
            f"Robot id {robot_id!r} has characters outside A-Z a-z 0-9 . _ - "
            "or does not start with a letter or digit.",
            robot_id=robot_id,
        )
    return robot_id
