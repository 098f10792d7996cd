"""Admin routes: API keys, robot credentials and the audit log.

The access policy restricts every path here to admins; the handlers only
read the caller from ``request.state.principal`` to record who did what.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from fleethub.api.deps import RobotId, ServicesDep
from fleethub.api.errors import error_responses
from fleethub.security.principals import ANONYMOUS, Principal, Role
from fleethub.security.store import ApiKeyInfo, RobotCredentialInfo

router = APIRouter(tags=["security"])


def current_principal(request: Request) -> Principal:
    """Return the caller the security middleware admitted."""
    return getattr(request.state, "principal", ANONYMOUS)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


class ApiKeyCreate(BaseModel):
    """A new API key's name and role."""

    name: str = Field(
        min_length=1, max_length=128, description="Who or what uses the key."
    )
    role: Role = Role.VIEWER


class ApiKeyOut(BaseModel):
    """An API key without its secret."""

    key_id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new API key; ``key`` is shown only in this response."""

    key: str


class RobotCredentialOut(BaseModel):
    """A robot credential without its secret."""

    robot_id: str
    credential_id: str
    created_at: datetime
    created_by: str


class RobotCredentialCreated(RobotCredentialOut):
    """A new robot credential; ``token`` is shown only in this response."""

    token: str


def _key_out(info: ApiKeyInfo) -> dict[str, Any]:
    return {
        "key_id": info.key_id,
        "name": info.name,
        "role": info.role,
        "created_at": info.created_at,
        "created_by": info.created_by,
        "revoked_at": info.revoked_at,
    }


def _credential_out(info: RobotCredentialInfo) -> dict[str, Any]:
    return {
        "robot_id": info.robot_id,
        "credential_id": info.credential_id,
        "created_at": info.created_at,
        "created_by": info.created_by,
    }


KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="Public key id.")]


@router.get("/api/keys", response_model=list[ApiKeyOut])
async def list_keys(services: ServicesDep) -> list[dict[str, Any]]:
    """List API keys, revoked ones included, without their secrets."""
    return [
        _key_out(info) for info in await services.security.credentials.list_api_keys()
    ]


@router.post(
    "/api/keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=error_responses(400),
)
async def create_key(
    body: ApiKeyCreate, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Create an API key; the key itself appears only in this response."""
    info, key = await services.security.credentials.create_api_key(
        body.name, body.role, principal
    )
    return {**_key_out(info), "key": key}


@router.delete(
    "/api/keys/{key_id}", response_model=ApiKeyOut, responses=error_responses(404)
)
async def revoke_key(key_id: KeyId, services: ServicesDep) -> dict[str, Any]:
    """Revoke an API key; requests with it fail from now on."""
    return _key_out(await services.security.credentials.revoke_api_key(key_id))


@router.get("/api/robot-credentials", response_model=list[RobotCredentialOut])
async def list_robot_credentials(services: ServicesDep) -> list[dict[str, Any]]:
    """List the robots that have a credential, without the secrets."""
    credentials = await services.security.credentials.list_robot_credentials()
    return [_credential_out(info) for info in credentials]


@router.post(
    "/api/robots/{robot_id}/credentials",
    status_code=201,
    response_model=RobotCredentialCreated,
    responses=error_responses(400, 409),
)
async def issue_robot_credential(
    robot_id: RobotId,
    services: ServicesDep,
    principal: PrincipalDep,
    replace: Annotated[
        bool, Query(description="Replace an existing credential instead of failing.")
    ] = False,
) -> dict[str, Any]:
    """Issue the robot's credential; the token appears only in this response."""
    info, token = await services.security.credentials.issue_robot_credential(
        robot_id, principal, replace=replace
    )
    return {**_credential_out(info), "token": token}


@router.delete(
    "/api/robots/{robot_id}/credentials",
    status_code=204,
    responses=error_responses(400, 404),
)
async def revoke_robot_credential(robot_id: RobotId, services: ServicesDep) -> None:
    """Revoke the robot's credential; it cannot open a new robot link after this."""
    await services.security.credentials.revoke_robot_credential(robot_id)


class AuditEntryOut(BaseModel):
    """One state-changing request."""

    id: int
    ts: datetime
    actor_kind: str
    actor_id: str
    actor_role: str | None
    method: str
    path: str
    status_code: int
    outcome: str
    client: str | None
    request_id: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    """A page of audit entries, newest first."""

    items: list[AuditEntryOut]
    next_before_id: int | None


@router.get("/api/audit", response_model=AuditPage)
async def list_audit(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    actor_id: Annotated[str | None, Query(max_length=160)] = None,
) -> dict[str, Any]:
    """Return audit entries, newest first: who changed what, when and from where."""
    limit = min(limit, services.settings.max_page_size)
    entries = await services.security.audit.entries(
        limit=limit, before_id=before_id, actor_id=actor_id
    )
    items = [{**vars(entry), "outcome": entry.outcome} for entry in entries]
    next_before = entries[-1].id if len(entries) == limit else None
    return {"items": items, "next_before_id": next_before}
