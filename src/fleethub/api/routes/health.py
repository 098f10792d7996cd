"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fleethub.api.deps import ServicesDep
from fleethub.backends import redis_check
from fleethub.errors import FleethubError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Report that the process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Any:
    """Report whether the database is reachable and the writer keeps up."""
    checks: dict[str, str] = {}
    try:
        await services.storage.ping()
        checks["database"] = "ok"
    except FleethubError as exc:
        checks["database"] = exc.message
    writer = services.telemetry_writer
    checks["telemetry_writer"] = (
        "ok" if writer.healthy and len(writer) < writer.max_buffer else "backlogged"
    )
    redis_status = await redis_check(services.live, services.bus)
    if redis_status is not None:
        checks["redis"] = redis_status
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
