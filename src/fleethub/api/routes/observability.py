"""Prometheus metrics and robot health."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleethub.api.deps import RobotId, ServicesDep
from fleethub.api.errors import error_responses
from fleethub.errors import NotFound
from fleethub.observability.health import (
    FleetHealth,
    RobotHealth,
    fleet_health,
    robot_health,
)

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(services: ServicesDep) -> Response:
    """Return this process's metrics in the Prometheus text format."""
    body = generate_latest(services.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/api/robots/{robot_id}/health", responses=error_responses(400, 404, 503))
async def get_robot_health(robot_id: RobotId, services: ServicesDep) -> RobotHealth:
    """Return one robot's uptime, errors, message rate, battery trend and status."""
    known = await services.live.get(robot_id) is not None
    if not known and robot_id not in await services.storage.robot_ids():
        raise NotFound(f"Robot {robot_id!r} is not known.", robot_id=robot_id)
    return await robot_health(services, robot_id)


@router.get("/api/fleet/health", responses=error_responses(503))
async def get_fleet_health(services: ServicesDep) -> FleetHealth:
    """Return every known robot's health and the count in each status."""
    return await fleet_health(services)
