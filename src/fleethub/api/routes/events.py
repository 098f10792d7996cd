"""Stored events: battery low, obstacles, errors, connections and more."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query

from fleethub.api.deps import ServicesDep
from fleethub.api.errors import error_responses
from fleethub.api.params import MAX_ROW_ID, aware, check_range
from fleethub.ids import validate_robot_id

router = APIRouter(prefix="/api/events", tags=["events"])


@router.get("", responses=error_responses(400))
async def list_events(
    services: ServicesDep,
    robot_id: str | None = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
) -> dict[str, Any]:
    """Return stored events, newest first, filtered by robot, type and time range."""
    if robot_id is not None:
        validate_robot_id(robot_id)
    start, end = aware(start, "start"), aware(end, "end")
    check_range(start, end)
    limit = min(limit, services.settings.max_page_size)
    items = await services.storage.events(
        robot_id=robot_id,
        event_type=type,
        start=start,
        end=end,
        limit=limit,
        before_id=before_id,
    )
    next_before = items[-1].id if len(items) == limit else None
    return {"items": msgspec.to_builtins(items), "next_before_id": next_before}
