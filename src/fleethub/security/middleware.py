"""The ASGI middleware that authenticates, authorizes and limits every request.

It runs in front of the router, so it covers every HTTP route and WebSocket
the application has or will have. See :mod:`fleethub.security` for the order
of the checks and :mod:`fleethub.security.policy` for the rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleethub.errors import (
    FleethubError,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)
from fleethub.ids import validate_robot_id
from fleethub.security.inputs import (
    check_json_body,
    check_path,
    check_query,
    is_json,
)
from fleethub.security.policy import Access
from fleethub.security.principals import ANONYMOUS, Principal
from fleethub.security.ratelimit import retry_after_header
from fleethub.settings import Settings

if TYPE_CHECKING:
    from fleethub.security.service import SecurityService

logger = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
# Query parameter for clients that cannot set headers on a WebSocket handshake,
# named as in RFC 6750 section 2.3. Accepted on WebSocket handshakes only.
WEBSOCKET_TOKEN_PARAMETER = "access_token"


def credential_from(scope: Scope) -> str:
    """Return the credential a request carries, or raise Unauthenticated."""
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated(
                "Authorization header must read 'Bearer <credential>'.",
                code="invalid_credential",
            )
        return value.strip()
    api_key = headers.get("x-api-key")
    if api_key:
        return api_key.strip()
    if scope["type"] == "websocket":
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if query.get(WEBSOCKET_TOKEN_PARAMETER):
            return query[WEBSOCKET_TOKEN_PARAMETER]
    raise Unauthenticated(
        "Request has no credential; send 'Authorization: Bearer <credential>' "
        "or 'X-API-Key: <key>'.",
        code="missing_credential",
    )


def authorize(principal: Principal, access: Access) -> None:
    """Raise Forbidden unless ``principal`` has the role ``access`` needs."""
    if principal.role is None:
        raise Forbidden(
            "A robot credential opens only its robot link, /ws/robots/{robot_id}.",
            code="robot_credential_not_allowed",
        )
    if not principal.role.includes(access.role):
        raise Forbidden(
            f"This request needs the {access.role.value} role; the credential has "
            f"{principal.role.value}.",
            code="insufficient_role",
            required_role=access.role.value,
            role=principal.role.value,
        )


def authorize_robot_link(principal: Principal, robot_id: str) -> None:
    """Raise Forbidden unless ``principal`` is the robot ``robot_id``."""
    if principal.kind != "robot":
        raise Forbidden(
            "The robot link needs the robot's own credential.",
            code="robot_credential_required",
        )
    if principal.robot_id != robot_id:
        raise Forbidden(
            f"Credential belongs to robot {principal.robot_id!r}, not {robot_id!r}.",
            code="robot_mismatch",
            robot_id=robot_id,
        )


def error_response(exc: FleethubError) -> JSONResponse:
    """Return the JSON error response, with the headers its status calls for."""
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="fleethub"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = retry_after_header(exc.details["retry_after_s"])
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


def route_path(scope: Scope) -> str:
    """Return the request path without the ``root_path`` prefix, as routing sees it.

    Behind a proxy that mounts the API under a prefix, ``scope["path"]``
    starts with ``root_path``; the access rules are written without it.
    """
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _security(scope: Scope) -> SecurityService:
    return scope["app"].state.services.security


async def _check_rate(security: SecurityService, principal: Principal) -> None:
    wait = await security.limiter.hit(principal)
    if wait is not None:
        raise RateLimited(
            "Rate limit exceeded; retry later.", retry_after_s=round(wait, 3)
        )


async def _authenticate(scope: Scope, security: SecurityService) -> Principal:
    """Authenticate the request's credential.

    Failures count against the API rate limit of the client's address, so a
    client that keeps sending bad credentials gets 429 instead of costing a
    database lookup or a signature check each time.
    """
    try:
        return await security.authenticate(credential_from(scope))
    except Unauthenticated:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        await _check_rate(
            security, Principal(kind="client", subject=address, role=None)
        )
        raise


def _log_denial(scope: Scope, exc: FleethubError) -> None:
    client = scope.get("client")
    logger.info(
        "request_denied",
        extra={
            "error": exc.code,
            "path": scope["path"][:256],
            "client": client[0] if client else None,
        },
    )


class SecurityMiddleware:
    """Admit or reject each HTTP request and WebSocket handshake."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._admit_http(scope)
            receive = await self._read_body(scope, receive)
        except FleethubError as exc:
            _log_denial(scope, exc)
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _admit_http(self, scope: Scope) -> None:
        security = _security(scope)
        access = security.policy.for_http(scope["method"], route_path(scope))
        if not access.public:
            principal = await self._principal(scope, security)
            scope.setdefault("state", {})["principal"] = principal
            authorize(principal, access)
            if principal is not ANONYMOUS:
                await _check_rate(security, principal)
        check_path(scope["path"])
        check_query(scope.get("query_string", b""), self.settings)

    async def _principal(self, scope: Scope, security: SecurityService) -> Principal:
        if not self.settings.auth_enabled:
            return ANONYMOUS
        return await _authenticate(scope, security)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the whole body within the size limit, then replay it to the app."""
        limit = self.settings.max_request_body_bytes
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message], receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and is_json(headers.get("content-type")):
            check_json_body(body, self.settings)
        return _replay(
            [{"type": "http.request", "body": body, "more_body": False}], receive
        )

    # WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.settings.auth_enabled:
            await self.app(scope, receive, send)
            return
        security = _security(scope)
        try:
            principal = await self._admit_websocket(scope, security)
        except FleethubError as exc:
            _log_denial(scope, exc)
            await _deny_websocket(scope, receive, send, exc)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(
            scope, _limited_receive(receive, send, security, principal), send
        )

    async def _admit_websocket(
        self, scope: Scope, security: SecurityService
    ) -> Principal:
        access = security.policy.for_websocket(route_path(scope))
        if access.robot_id is not None:
            validate_robot_id(access.robot_id)
        if access.public:
            return ANONYMOUS
        principal = await _authenticate(scope, security)
        if access.robot_id is not None:
            authorize_robot_link(principal, access.robot_id)
        else:
            authorize(principal, access)
        await _check_rate(security, principal)
        return principal


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body has {size} bytes or more; the limit is {limit}.", limit=limit
    )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a receive callable that yields ``messages`` first, then the real ones."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _deny_websocket(
    scope: Scope, receive: Receive, send: Send, exc: FleethubError
) -> None:
    """Reject a handshake with the JSON error body, or with close code 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await error_response(exc)(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})


def _limited_receive(
    receive: Receive, send: Send, security: SecurityService, principal: Principal
) -> Receive:
    """Wrap ``receive`` so each incoming message counts against the rate limit.

    Over the limit, the client gets a ``rate_limited`` error frame with the
    wait in ``details.retry_after_s`` and the next message is held back until
    then. Nothing is dropped: reading pauses, and TCP flow control slows the
    sender down.
    """

    async def limited() -> Message:
        message = await receive()
        if message["type"] == "websocket.receive":
            await throttle_message(send, security, principal)
        return message

    return limited


async def throttle_message(
    send: Send, security: SecurityService, principal: Principal
) -> None:
    """Count one incoming WebSocket message; over the limit, say so and wait.

    The robot link calls this itself for the messages it reads past the
    ASGI receive (see :mod:`fleethub.transports.raw_frames`), so both paths send
    the same error frame and hold back the same way.
    """
    while (wait := await security.limiter.hit(principal)) is not None:
        logger.info(
            "websocket_rate_limited",
            extra={"principal": principal.rate_limit_key, "retry_after_s": wait},
        )
        frame: dict[str, Any] = {
            "type": "error",
            "code": "rate_limited",
            "message": f"Rate limit exceeded; wait {wait:.2f} s before sending more.",
            "retryable": True,
            "details": {"retry_after_s": round(wait, 3)},
        }
        await send({"type": "websocket.send", "text": json.dumps(frame)})
        await asyncio.sleep(wait)
