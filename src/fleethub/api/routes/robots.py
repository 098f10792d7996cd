"""Robots: list, latest state, telemetry history and analytics."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query

from fleethub.api.deps import RobotId, ServicesDep
from fleethub.api.errors import error_responses
from fleethub.api.params import (
    aware,
    check_range,
    decode_time_cursor,
    encode_time_cursor,
)
from fleethub.errors import NotFound
from fleethub.live.base import RobotSnapshot
from fleethub.services import Services

router = APIRouter(prefix="/api/robots", tags=["robots"])


def _snapshot(snapshot: RobotSnapshot) -> dict[str, Any]:
    return msgspec.to_builtins(snapshot)


async def _known_robot(services: Services, robot_id: str) -> RobotSnapshot | None:
    snapshot = await services.live.get(robot_id)
    if snapshot is None and robot_id not in await services.storage.robot_ids():
        raise NotFound(f"Robot {robot_id!r} is not known.", robot_id=robot_id)
    return snapshot


async def _stored_snapshot(services: Services, robot_id: str) -> RobotSnapshot:
    """Describe an offline robot from its newest stored state.

    The live state forgets robots when the process restarts (in memory) or when
    their keys expire (Redis); the history still knows where each one was.
    """
    row = await services.storage.latest_telemetry(robot_id)
    if row is None:
        return RobotSnapshot(robot_id=robot_id, online=False)
    return RobotSnapshot(
        robot_id=robot_id, online=False, last_seen=row.ts, state=row.to_state()
    )


async def _require_stored_robot(services: Services, robot_id: str) -> None:
    """Raise NotFound for an unknown robot, asking live state only if needed.

    History reads come from the database, so they keep working while Redis,
    which keeps live state in a multi-process deployment, is down.
    """
    if robot_id in await services.storage.robot_ids():
        return
    await _known_robot(services, robot_id)


@router.get("")
async def list_robots(services: ServicesDep) -> list[dict[str, Any]]:
    """List every known robot with its presence, last-seen time and latest state."""
    live = {snapshot.robot_id: snapshot for snapshot in await services.live.all()}
    robot_ids = sorted(set(live) | set(await services.storage.robot_ids()))
    snapshots = []
    for robot_id in robot_ids:
        snapshot = live.get(robot_id) or await _stored_snapshot(services, robot_id)
        snapshots.append(_snapshot(snapshot))
    return snapshots


@router.get("/{robot_id}/state", responses=error_responses(400, 404))
async def robot_state(robot_id: RobotId, services: ServicesDep) -> dict[str, Any]:
    """Return the robot's presence and latest state."""
    snapshot = await _known_robot(services, robot_id)
    return _snapshot(snapshot or await _stored_snapshot(services, robot_id))


@router.get("/{robot_id}/telemetry", responses=error_responses(400, 404))
async def robot_telemetry(
    robot_id: RobotId,
    services: ServicesDep,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Return stored states in a time range, oldest first, one page at a time."""
    start, end = aware(start, "start"), aware(end, "end")
    check_range(start, end)
    limit = min(limit, services.settings.max_page_size)
    await _require_stored_robot(services, robot_id)
    rows = await services.storage.telemetry(
        robot_id, start, end, limit, after=decode_time_cursor(cursor)
    )
    next_cursor = encode_time_cursor(rows[-1].ts) if len(rows) == limit else None
    return {
        "robot_id": robot_id,
        "items": [row._asdict() for row in rows],
        "next_cursor": next_cursor,
    }


@router.get("/{robot_id}/analytics", responses=error_responses(400, 404))
async def robot_analytics(
    robot_id: RobotId,
    services: ServicesDep,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Return distance, speed, operating hours, charging and battery over a range."""
    start, end = aware(start, "start"), aware(end, "end")
    check_range(start, end)
    await _require_stored_robot(services, robot_id)
    result = await services.storage.analytics(
        robot_id, start, end, services.settings.analytics_max_gap_s
    )
    return msgspec.to_builtins(result)
