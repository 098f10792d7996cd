"""Per-request context: request ids, log fields and HTTP/WebSocket metrics.

:class:`RequestContextMiddleware` is plain ASGI, so it handles HTTP requests
and WebSocket connections alike. For each one it

- takes the caller's ``X-Request-ID`` if it is a safe token (1-128 letters,
  digits or ``._:-``), or makes a new one, and returns it in the response
  headers (on WebSocket, in the handshake response);
- stores it in ``request.state.request_id`` for the error handlers;
- binds ``request_id`` and ``component`` into the log context, so every line
  logged while handling the request carries them;
- tags the Sentry scope with the request id when Sentry is on;
- counts the request and its latency under the route template
  (``/api/robots/{robot_id}/state``), never the raw path.

A response that the outermost error handler sends after an unexpected
exception bypasses this middleware, so that handler adds the header itself.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleethub.logs import log_context
from fleethub.observability.metrics import FleetMetrics
from fleethub.observability.sentry import tag_request

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED_ROUTE = "unmatched"


def request_id_from(scope: Scope) -> str:
    """Return the caller's request id if it is safe to log, or a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """Return the matched route's path template, or ``unmatched``."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


def _metrics(scope: Scope) -> FleetMetrics | None:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return getattr(services, "metrics", None)


class RequestContextMiddleware:
    """Give each HTTP request and WebSocket connection an id, log fields, metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        tag_request(request_id)
        component = "api" if scope["type"] == "http" else "websocket"
        with log_context(request_id=request_id, component=component):
            if scope["type"] == "http":
                await self._http(scope, receive, send, request_id)
            else:
                await self._websocket(scope, receive, send, request_id)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record_http(scope, status, time.perf_counter() - started)

    def _record_http(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope)
        method = scope["method"]
        logger.debug(
            "http_request",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_s": seconds,
            },
        )
        metrics = _metrics(scope)
        if metrics is None:
            return
        metrics.http_requests_total.labels(method, route, str(status)).inc()
        metrics.http_request_duration_seconds.labels(method, route).observe(seconds)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        accepted_at: float | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal accepted_at
            if message["type"] == "websocket.accept":
                message = _with_header(message, request_id)
                accepted_at = time.perf_counter()
                self._websocket_opened(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if accepted_at is not None:
                self._websocket_closed(scope, time.perf_counter() - accepted_at)

    def _websocket_opened(self, scope: Scope) -> None:
        metrics = _metrics(scope)
        if metrics is not None:
            route = route_template(scope)
            metrics.websocket_connections_total.labels(route).inc()
            metrics.websocket_active.labels(route).inc()

    def _websocket_closed(self, scope: Scope, seconds: float) -> None:
        metrics = _metrics(scope)
        if metrics is not None:
            route = route_template(scope)
            metrics.websocket_active.labels(route).dec()
            metrics.websocket_duration_seconds.labels(route).observe(seconds)


def _with_header(message: Message, request_id: str) -> dict[str, Any]:
    headers = list(message.get("headers") or [])
    headers.append((b"x-request-id", request_id.encode()))
    return {**message, "headers": headers}
