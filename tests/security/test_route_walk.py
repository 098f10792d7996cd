"""Every route in the OpenAPI description, and every WebSocket, needs a credential."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import websockets
from fastapi.routing import APIWebSocketRoute
from starlette.routing import WebSocketRoute

from auth_helpers import robot_token
from fleethub.cli.server import RunningServer

PUBLIC_PATHS = {"/healthz", "/readyz"}
WRONG_CREDENTIALS = [
    {"Authorization": "Bearer fhk_000000000000_" + "A" * 43},
    {"Authorization": "Bearer not-a-credential"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"X-API-Key": "fhk_000000000000_" + "B" * 43},
    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
]


def _concrete(path: str) -> str:
    """Fill every path parameter with a valid value."""
    path = path.replace("{key_id}", "0123456789ab")
    return re.sub(r"\{[^}]+\}", "robot-1", path)


def _operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), _concrete(path))
        for path, operations in schema["paths"].items()
        for method in operations
        if path not in PUBLIC_PATHS
    ]


async def _openapi(server: RunningServer, headers: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/openapi.json", headers=headers)
    assert response.status_code == 200
    return response.json()


async def test_every_route_rejects_missing_and_wrong_credentials(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Each operation returns 401 without a credential and with a wrong one."""
    operations = _operations(await _openapi(server, admin))
    assert len(operations) >= 10
    for method, path in operations:
        response = await http.request(method, path, json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "missing_credential"
        assert response.headers["www-authenticate"].startswith("Bearer")
        for headers in WRONG_CREDENTIALS:
            response = await http.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, headers)


async def test_every_route_rejects_robot_credential(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Every REST operation rejects a robot credential with 403."""
    headers = {"Authorization": f"Bearer {await robot_token(server, 'robot-1')}"}
    for method, path in _operations(await _openapi(server, admin)):
        response = await http.request(method, path, json={}, headers=headers)
        assert response.status_code == 403, (method, path)
        assert response.json()["error"] == "robot_credential_not_allowed"


async def test_probes_and_openapi_access(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """The probes are public; the OpenAPI description and docs are not by default."""
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    assert (await http.get("/openapi.json")).status_code == 401
    assert (await http.get("/docs")).status_code == 401
    assert (await http.get("/no/such/route")).status_code == 401


def _websocket_paths(server: RunningServer) -> list[str]:
    routes = [
        route
        for route in server.app.routes
        if isinstance(route, (WebSocketRoute, APIWebSocketRoute))
    ]
    return [_concrete(route.path) for route in routes]


async def _handshake_status(url: str, headers: dict[str, str]) -> int:
    with pytest.raises(websockets.InvalidStatus) as failure:
        async with websockets.connect(url, additional_headers=headers):
            pass
    return failure.value.response.status_code


async def test_every_websocket_rejects_missing_and_wrong_credentials(
    server: RunningServer,
) -> None:
    """Each WebSocket handshake fails with 401 without or with a wrong credential."""
    paths = _websocket_paths(server)
    assert "/ws/robots/robot-1" in paths
    for path in paths:
        url = server.ws_url + path
        assert await _handshake_status(url, {}) == 401
        for headers in WRONG_CREDENTIALS:
            assert await _handshake_status(url, headers) == 401, (path, headers)
