"""The audit log: who changed what, when, from where, and with what outcome.

:class:`AuditMiddleware` writes one row for every request whose method is not
GET, HEAD or OPTIONS once the response is complete, so a route added later is
audited without any change to it. Rejected attempts (401, 403, 429) are
recorded too. Bodies are never recorded, because they may carry secrets.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleethub.models import utcnow
from fleethub.security.principals import Principal
from fleethub.security.schema import audit_log
from fleethub.security.store import connect

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_AUDIT_PATH_LENGTH = 512


@dataclass(frozen=True)
class AuditEntry:
    """One state-changing request and its outcome."""

    actor_kind: str
    actor_id: str
    actor_role: str | None
    method: str
    path: str
    status_code: int
    client: str | None
    request_id: str
    ts: datetime = field(default_factory=utcnow)
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @property
    def outcome(self) -> str:
        """``success``, ``denied`` (401, 403, 429), ``rejected`` (4xx) or ``error``."""
        if self.status_code < 400:
            return "success"
        if self.status_code in (401, 403, 429):
            return "denied"
        return "rejected" if self.status_code < 500 else "error"


class AuditLog:
    """Append and read audit entries; there is no way to change or delete one."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def append(self, entry: AuditEntry) -> None:
        """Store one entry."""
        async with connect(self.engine, write=True) as conn:
            await conn.execute(
                insert(audit_log).values(
                    ts=entry.ts,
                    actor_kind=entry.actor_kind,
                    actor_id=entry.actor_id[:160],
                    actor_role=entry.actor_role,
                    method=entry.method[:16],
                    path=entry.path[:MAX_AUDIT_PATH_LENGTH],
                    status_code=entry.status_code,
                    outcome=entry.outcome,
                    client=(entry.client or "")[:64] or None,
                    request_id=entry.request_id,
                    details=entry.details,
                )
            )

    async def entries(
        self, *, limit: int, before_id: int | None = None, actor_id: str | None = None
    ) -> list[AuditEntry]:
        """Return entries newest first, optionally before an id or for one actor."""
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        if actor_id is not None:
            query = query.where(audit_log.c.actor_id == actor_id)
        async with connect(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [_entry(row) for row in rows]


def _entry(row: Any) -> AuditEntry:
    ts = row.ts if row.ts.tzinfo is not None else row.ts.replace(tzinfo=utcnow().tzinfo)
    return AuditEntry(
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        actor_role=row.actor_role,
        method=row.method,
        path=row.path,
        status_code=row.status_code,
        client=row.client,
        request_id=row.request_id,
        ts=ts,
        details=row.details,
        id=row.id,
    )


def entry_for(
    scope: Scope, principal: Principal | None, status_code: int
) -> AuditEntry:
    """Build the audit entry of a finished request."""
    state = scope.get("state", {})
    client = scope.get("client")
    return AuditEntry(
        actor_kind=principal.kind if principal else "unauthenticated",
        actor_id=principal.subject if principal else "-",
        actor_role=principal.role.value if principal and principal.role else None,
        method=scope["method"],
        path=scope["path"],
        status_code=status_code,
        client=client[0] if client else None,
        request_id=state.get("request_id", "-"),
        details={"query": scope.get("query_string", b"").decode("latin-1")[:512]},
    )


class AuditMiddleware:
    """Record every state-changing HTTP request after its response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.setdefault("request_id", uuid.uuid4().hex)
        status_code = 500

        async def capture_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture_status)
        finally:
            await self._record(scope, status_code)

    async def _record(self, scope: Scope, status_code: int) -> None:
        services = getattr(scope["app"].state, "services", None)
        if services is None:
            return
        entry = entry_for(scope, scope["state"].get("principal"), status_code)
        try:
            await services.security.audit.append(entry)
        except Exception:
            logger.exception(
                "audit_write_failed",
                extra={"request_id": entry.request_id, "method": entry.method},
            )
