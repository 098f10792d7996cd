"""Role matrix, robot impersonation and key revocation against a running server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi import FastAPI

from auth_helpers import api_key_headers, robot_headers, robot_token
from fleethub.api.app import create_app
from fleethub.cli.server import RunningServer
from fleethub.client.robot import RobotClient
from fleethub.models import utcnow
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from fleethub.security.policy import AccessPolicy
from fleethub.security.principals import CLI, Role
from fleethub.settings import Settings
from security.support import secure_settings

ROLES = ("viewer", "operator", "admin")

# (method, path, body, lowest role allowed). Statuses for allowed roles vary
# (200, 201, 404 for an unknown robot); denied roles always get 403.
MATRIX = [
    ("GET", "/api/robots", None, "viewer"),
    ("GET", "/api/events", None, "viewer"),
    ("GET", "/api/robots/robot-1/state", None, "viewer"),
    ("POST", "/api/robots/robot-1/commands", {"type": "stop"}, "operator"),
    ("GET", "/api/keys", None, "admin"),
    ("POST", "/api/keys", {"name": "made in test", "role": "viewer"}, "admin"),
    ("GET", "/api/audit", None, "admin"),
    ("GET", "/api/robot-credentials", None, "admin"),
    ("POST", "/api/robots/robot-2/credentials?replace=true", None, "admin"),
    ("DELETE", "/api/keys/0123456789ab", None, "admin"),
]


async def test_role_matrix(server: RunningServer, http: httpx.AsyncClient) -> None:
    """Each role reaches exactly the routes at or below its rank."""
    headers = {role: await api_key_headers(server, role) for role in ROLES}
    for method, path, body, lowest in MATRIX:
        for role in ROLES:
            response = await http.request(
                method, path, json=body, headers=headers[role]
            )
            case = (method, path, role, response.text)
            if Role(role).includes(Role(lowest)):
                assert response.status_code not in (401, 403), case
                assert response.status_code < 500, case
            else:
                assert response.status_code == 403, case
                assert response.json()["error"] == "insufficient_role"
                assert response.json()["details"]["required_role"] == lowest


POLICY_TABLE = [
    ("GET", "/api/missions", Role.VIEWER),
    ("POST", "/api/missions", Role.OPERATOR),
    ("POST", "/api/alerts/1/acknowledge", Role.OPERATOR),
    ("DELETE", "/api/schedules/7", Role.OPERATOR),
    ("GET", "/api/rules", Role.VIEWER),
    ("POST", "/api/rules", Role.ADMIN),
    ("PATCH", "/api/rules/battery", Role.ADMIN),
    ("GET", "/api/webhooks", Role.ADMIN),
    ("POST", "/api/webhooks", Role.ADMIN),
    ("GET", "/api/audit", Role.ADMIN),
    ("GET", "/api/keys/", Role.ADMIN),
    ("GET", "/api/robots/r1/credentials", Role.ADMIN),
    ("GET", "/api/stream", Role.VIEWER),
    ("GET", "/metrics", Role.VIEWER),
    ("GET", "/ws/fleet", Role.VIEWER),
]


@pytest.mark.parametrize(("method", "path", "role"), POLICY_TABLE)
def test_policy_covers_routes_added_later(method: str, path: str, role: Role) -> None:
    """Routes that other parts add get their role from the path alone."""
    access = AccessPolicy(Settings(auth_enabled=True)).for_http(method, path)
    assert not access.public
    assert access.role is role


def test_policy_public_paths() -> None:
    """Probes are public; metrics and docs become public only through settings."""
    strict = AccessPolicy(Settings(auth_enabled=True))
    relaxed = AccessPolicy(Settings(metrics_access="public", docs_public=True))
    assert strict.for_http("GET", "/healthz").public
    assert strict.for_http("GET", "/readyz").public
    assert not strict.for_http("GET", "/metrics").public
    assert not strict.for_http("GET", "/openapi.json").public
    assert relaxed.for_http("GET", "/metrics").public
    assert relaxed.for_http("GET", "/openapi.json").public
    assert strict.for_websocket("/ws/robots/r1").robot_id == "r1"


async def _handshake_error(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    with pytest.raises(websockets.InvalidStatus) as failure:
        async with websockets.connect(url, additional_headers=headers):
            pass
    return failure.value.response.status_code, bytes(failure.value.response.body)


async def test_robot_cannot_connect_as_another_robot(server: RunningServer) -> None:
    """A robot's credential opens its own link and is rejected on another's."""
    headers = await robot_headers(server, "robot-a")
    await robot_token(server, "robot-b")
    status, body = await _handshake_error(f"{server.ws_url}/ws/robots/robot-b", headers)
    assert status == 403
    assert b"robot_mismatch" in body
    async with websockets.connect(
        f"{server.ws_url}/ws/robots/robot-a", additional_headers=headers
    ) as socket:
        assert b"welcome" in (await socket.recv()).encode()


async def test_api_key_cannot_open_robot_link(server: RunningServer) -> None:
    """The robot link rejects even an admin key."""
    headers = await api_key_headers(server, "admin")
    status, body = await _handshake_error(f"{server.ws_url}/ws/robots/robot-a", headers)
    assert status == 403
    assert b"robot_credential_required" in body


async def test_robot_state_for_another_robot_is_rejected(server: RunningServer) -> None:
    """A connected robot cannot publish a state in another robot's name."""
    state = RobotState(
        timestamp=utcnow(),
        position=Position(x=0, y=0),
        orientation=Orientation(yaw=0),
        velocity=Velocity(linear=0),
        status=RobotStatus.IDLE,
        robot_id="robot-b",
    )
    headers = await robot_headers(server, "robot-a")
    async with RobotClient(server.ws_url, "robot-a", headers=headers) as client:
        await client.send_state(state)
        await client.flush(10)
    assert client.stats.rejected == {"robot_id_mismatch": 1}
    assert await server.app.state.services.storage.count_telemetry("robot-b") == 0


async def test_query_token_fallback(server: RunningServer) -> None:
    """The access_token query parameter authenticates a WebSocket handshake."""
    token = await robot_token(server, "robot-q")
    url = f"{server.ws_url}/ws/robots/robot-q?access_token={token}"
    async with websockets.connect(url) as socket:
        assert "welcome" in await socket.recv()


async def test_query_token_opens_fleet_stream(server: RunningServer) -> None:
    """A dashboard's key in access_token opens /ws/fleet; it is not a filter."""
    headers = await api_key_headers(server, "viewer")
    key = headers["Authorization"].removeprefix("Bearer ")
    url = f"{server.ws_url}/ws/fleet?access_token={key}&states=false"
    async with websockets.connect(url) as socket:
        greeting = json.loads(await socket.recv())
    assert greeting["type"] == "subscribed", greeting
    assert greeting["filters"]["states"] is False


async def test_query_token_not_accepted_on_rest(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """REST requests must send the key in a header, never in the URL."""
    headers = await api_key_headers(server, "admin")
    key = headers["Authorization"].removeprefix("Bearer ")
    response = await http.get("/api/robots", params={"access_token": key})
    assert response.status_code == 401


async def test_revoked_credentials_stop_working(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A revoked key and a removed robot credential are rejected at once."""
    created = await http.post(
        "/api/keys", json={"name": "temp", "role": "viewer"}, headers=admin
    )
    assert created.status_code == 201
    key = created.json()["key"]
    assert (
        await http.get("/api/robots", headers={"X-API-Key": key})
    ).status_code == 200
    revoked = await http.delete(f"/api/keys/{created.json()['key_id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert (
        await http.get("/api/robots", headers={"X-API-Key": key})
    ).status_code == 401

    headers = await robot_headers(server, "robot-r")
    removed = await http.delete("/api/robots/robot-r/credentials", headers=admin)
    assert removed.status_code == 204
    status, _ = await _handshake_error(f"{server.ws_url}/ws/robots/robot-r", headers)
    assert status == 401


async def test_keys_are_listed_without_secrets(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Listing keys shows ids, names and roles but no key or digest."""
    created = await http.post(
        "/api/keys", json={"name": "listed", "role": "operator"}, headers=admin
    )
    key = created.json()["key"]
    listing = await http.get("/api/keys", headers=admin)
    assert listing.status_code == 200
    assert key not in listing.text
    assert "digest" not in listing.text
    assert {"name": "listed", "role": "operator"}.items() <= listing.json()[-1].items()


async def test_root_path_prefix_keeps_admin_rules(tmp_path: Path) -> None:
    """Behind a proxy prefix, admin paths still need an admin."""
    app = create_app(secure_settings(tmp_path), migrate_schema=True)
    transport = httpx.ASGITransport(app=app, root_path="/fleet")
    async with app.router.lifespan_context(app):
        headers = await api_key_headers_for_app(app, "viewer")
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as http:
            keys = await http.get("/fleet/api/keys", headers=headers)
            robots = await http.get("/fleet/api/robots", headers=headers)
    assert keys.status_code == 403
    assert robots.status_code == 200


async def api_key_headers_for_app(app: FastAPI, role: str) -> dict[str, str]:
    store = app.state.services.security.credentials
    _, key = await store.create_api_key("prefixed", Role(role), CLI)
    return {"Authorization": f"Bearer {key}"}
