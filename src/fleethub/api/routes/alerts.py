"""Alerts: rule firings that stay open until they clear or are acknowledged."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from fleethub.api.deps import ServicesDep
from fleethub.api.errors import error_responses
from fleethub.api.params import aware
from fleethub.ids import validate_robot_id

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

AlertStatus = Literal["open", "acknowledged", "cleared"]


class AcknowledgeRequest(BaseModel):
    """Body of an acknowledgement: the operator's name, if given."""

    by: str | None = Field(None, max_length=128)


@router.get("", responses=error_responses(400))
async def list_alerts(
    services: ServicesDep,
    status: AlertStatus | None = None,
    robot_id: str | None = None,
    rule_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    before: datetime | None = None,
) -> dict[str, Any]:
    """Return alerts newest first, filtered by status, robot and rule."""
    if robot_id is not None:
        validate_robot_id(robot_id)
    limit = min(limit, services.settings.max_page_size)
    items = await services.rules.alert_store.find(
        status=status,
        robot_id=robot_id,
        rule_id=rule_id,
        limit=limit,
        before=aware(before, "before"),
    )
    next_before = items[-1].opened_at.isoformat() if len(items) == limit else None
    return {"items": msgspec.to_builtins(items), "next_before": next_before}


@router.post("/{alert_id}/ack", responses=error_responses(404, 409))
async def acknowledge_alert(
    alert_id: Annotated[str, Path(max_length=36)],
    services: ServicesDep,
    body: AcknowledgeRequest | None = None,
) -> dict[str, Any]:
    """Acknowledge an open alert; acknowledging twice returns it unchanged."""
    by = body.by if body is not None else None
    return msgspec.to_builtins(await services.rules.acknowledge(alert_id, by))
