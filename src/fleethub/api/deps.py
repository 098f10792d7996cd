"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from fleethub.ids import validate_robot_id
from fleethub.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def robot_id_path(robot_id: Annotated[str, Path(description="Robot id.")]) -> str:
    """Validate the robot id in the path."""
    return validate_robot_id(robot_id)


RobotId = Annotated[str, Depends(robot_id_path)]
