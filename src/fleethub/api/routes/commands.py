"""Commands: create for a robot, read, list per robot, cancel."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from fleethub.api.deps import RobotId, ServicesDep
from fleethub.api.errors import error_responses
from fleethub.api.params import MAX_ROW_ID
from fleethub.commands.store import Command, CommandStatus
from fleethub.errors import InvalidInput

router = APIRouter(tags=["commands"])

IdempotencyKey = Annotated[
    str | None, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
]
CommandIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="Command id.")
]


class CommandRequest(BaseModel):
    """A command for one robot."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(max_length=256, description="Command type, e.g. go_to, stop.")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(0, ge=0, le=100, description="Higher is delivered first.")
    ttl_s: float | None = Field(
        None, description="Seconds the command may wait for delivery before it expires."
    )
    idempotency_key: IdempotencyKey = Field(
        None, description="A retried POST with the same key returns the same command."
    )


def command_body(command: Command) -> dict[str, Any]:
    """Return the JSON form of a command."""
    return msgspec.to_builtins(command)


@router.post(
    "/api/robots/{robot_id}/commands",
    status_code=202,
    responses=error_responses(400, 404, 409),
)
async def create_command(
    robot_id: RobotId,
    body: CommandRequest,
    services: ServicesDep,
    response: Response,
    idempotency_key: Annotated[IdempotencyKey, Header()] = None,
) -> dict[str, Any]:
    """Store a command and deliver it now or when the robot next connects."""
    key = _one_key(body.idempotency_key, idempotency_key)
    command, created = await services.commands.submit(
        robot_id,
        body.type,
        body.params,
        priority=body.priority,
        ttl_s=body.ttl_s,
        idempotency_key=key,
    )
    if not created:
        response.status_code = 200
    return command_body(command)


def _one_key(from_body: str | None, from_header: str | None) -> str | None:
    if from_body and from_header and from_body != from_header:
        raise InvalidInput(
            "The Idempotency-Key header and the body's idempotency_key differ; "
            "send one of them.",
            code="idempotency_key_mismatch",
        )
    return from_body or from_header


@router.get("/api/robots/{robot_id}/commands", responses=error_responses(400))
async def list_commands(
    robot_id: RobotId,
    services: ServicesDep,
    status: Annotated[list[CommandStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="next_before of the last page."),
    ] = None,
) -> dict[str, Any]:
    """Return the robot's commands, newest first, optionally only some statuses."""
    limit = min(limit, services.settings.max_page_size)
    items = await services.commands.list_for_robot(
        robot_id, status or (), limit=limit, before_seq=before
    )
    next_before = items[-1].seq if len(items) == limit else None
    return {"items": [command_body(c) for c in items], "next_before": next_before}


@router.get("/api/commands/{command_id}", responses=error_responses(404))
async def get_command(
    command_id: CommandIdPath, services: ServicesDep
) -> dict[str, Any]:
    """Return a command with its status history."""
    command = await services.commands.get(command_id)
    history = await services.commands.history(command_id)
    return {**command_body(command), "transitions": msgspec.to_builtins(history)}


@router.post("/api/commands/{command_id}/cancel", responses=error_responses(404, 409))
async def cancel_command(
    command_id: CommandIdPath, services: ServicesDep
) -> dict[str, Any]:
    """Cancel a command the robot has not acknowledged yet."""
    return command_body(
        await services.commands.cancel(command_id, "Cancelled by an operator.")
    )
