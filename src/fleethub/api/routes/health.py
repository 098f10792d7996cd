"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fleethub.api.deps import ServicesDep
from fleethub.api.errors import error_responses
from fleethub.errors import NotReady
from fleethub.observability.readiness import OK

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Report that the process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(services: ServicesDep) -> Any:
    """Report whether the database, Redis and other dependencies are usable.

    Returns 503 with error ``not_ready``, naming each failing check, when not.
    """
    observability = services.observability
    if observability is None:
        raise RuntimeError("Services were built without observability.")
    checks = await observability.readiness.run()
    failing = [name for name, result in checks.items() if result != OK]
    if not failing:
        return {"status": "ready", "checks": checks}
    error = NotReady(
        f"Not ready: {', '.join(failing)}.", failing=failing, checks=checks
    )
    return JSONResponse(error.to_dict(), status_code=error.status_code)
