"""Missions: create, read, list, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from fleethub.api.deps import ServicesDep
from fleethub.api.errors import error_responses
from fleethub.api.params import MAX_ROW_ID
from fleethub.ids import validate_robot_id
from fleethub.missions.progress import mission_summary
from fleethub.missions.store import Mission, MissionStatus

router = APIRouter(prefix="/api/missions", tags=["missions"])

MissionIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="Mission id.")
]


class TaskRequest(BaseModel):
    """A command the robot runs when it reaches the waypoint."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(max_length=256)
    params: dict[str, Any] = Field(default_factory=dict)


class WaypointRequest(BaseModel):
    """A point to reach: metres and radians in the site's map frame."""

    model_config = ConfigDict(extra="forbid")

    x: float
    y: float
    yaw: float | None = None
    tolerance: float | None = Field(None, description="Metres; default from settings.")
    task: TaskRequest | None = None


class MissionRequest(BaseModel):
    """A mission: waypoints visited in order, optionally by a chosen robot."""

    model_config = ConfigDict(extra="forbid")

    waypoints: list[WaypointRequest]
    robot_id: str | None = Field(None, description="Omit to let fleethub choose.")
    priority: int = Field(0, ge=0, le=100, description="Higher is assigned first.")
    deadline: datetime | None = Field(None, description="Time zone required.")
    timeout_s: float | None = Field(
        None, description="Seconds allowed after assignment."
    )


def mission_body(mission: Mission) -> dict[str, Any]:
    """Return the JSON form of a mission, with its metrics."""
    body = msgspec.to_builtins(mission)
    body["metrics"] = mission_summary(mission)["metrics"]
    return body


@router.post("", status_code=201, responses=error_responses(400, 404))
async def create_mission(body: MissionRequest, services: ServicesDep) -> dict[str, Any]:
    """Store a mission; it is assigned at once when an eligible robot is free."""
    if body.robot_id is not None:
        validate_robot_id(body.robot_id)
    mission = await services.missions.create(
        [waypoint.model_dump() for waypoint in body.waypoints],
        robot_id=body.robot_id,
        priority=body.priority,
        deadline=body.deadline,
        timeout_s=body.timeout_s,
    )
    return mission_body(mission)


@router.get("", responses=error_responses(400))
async def list_missions(
    services: ServicesDep,
    status: Annotated[list[MissionStatus] | None, Query()] = None,
    robot_id: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="next_before of the last page."),
    ] = None,
) -> dict[str, Any]:
    """Return missions, newest first, filtered by status and robot."""
    if robot_id is not None:
        validate_robot_id(robot_id)
    limit = min(limit, services.settings.max_page_size)
    items = await services.missions.list_missions(
        status or (), robot_id=robot_id, limit=limit, before_seq=before
    )
    next_before = items[-1].seq if len(items) == limit else None
    return {"items": [mission_body(m) for m in items], "next_before": next_before}


@router.get("/{mission_id}", responses=error_responses(404))
async def get_mission(
    mission_id: MissionIdPath, services: ServicesDep
) -> dict[str, Any]:
    """Return a mission with its progress, metrics and status history."""
    mission = await services.missions.get(mission_id)
    history = await services.missions.history(mission_id)
    return {**mission_body(mission), "transitions": msgspec.to_builtins(history)}


@router.post("/{mission_id}/cancel", responses=error_responses(404, 409))
async def cancel_mission(
    mission_id: MissionIdPath, services: ServicesDep
) -> dict[str, Any]:
    """Cancel an unfinished mission and send a stop command to its robot."""
    return mission_body(await services.missions.cancel(mission_id))
