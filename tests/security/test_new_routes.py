"""Routes added after the app is built are protected and audited without changes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import websockets
from fastapi import WebSocket

from auth_helpers import api_key_headers, robot_token
from fleethub.cli.server import running_server
from fleethub.security.provision import http_base_url, issue_robot_tokens
from security.support import secure_settings


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        await websocket.send_text(await websocket.receive_text())


async def _create_widget() -> dict[str, str]:
    return {"status": "created"}


async def test_new_http_and_websocket_routes_are_covered(tmp_path: Path) -> None:
    """Routes added later get the default roles, audit and socket rate limits."""
    settings = secure_settings(tmp_path, rate_limit_api="6/second")
    async with running_server(settings, migrate_schema=True) as server:
        server.app.add_api_route("/api/widgets", _create_widget, methods=["POST"])
        server.app.add_api_websocket_route("/ws/echo", _echo)
        viewer = await api_key_headers(server, "viewer")
        operator = await api_key_headers(server, "operator")
        admin = await api_key_headers(server, "admin")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            anonymous = await http.post("/api/widgets")
            denied = await http.post("/api/widgets", headers=viewer)
            created = await http.post("/api/widgets", headers=operator)
            audit = (await http.get("/api/audit", headers=admin)).json()["items"]
        frames = await _flood_echo(f"{server.ws_url}/ws/echo", viewer)

    assert anonymous.status_code == 401
    assert denied.status_code == 403
    assert created.status_code == 200
    assert [entry["status_code"] for entry in audit[:3]] == [200, 403, 401]
    assert [entry["path"] for entry in audit[:3]] == ["/api/widgets"] * 3
    errors = [frame for frame in frames if frame.get("code") == "rate_limited"]
    assert errors
    assert errors[0]["details"]["retry_after_s"] > 0
    echoed = [frame for frame in frames if "n" in frame]
    assert [frame["n"] for frame in echoed] == list(range(10))


async def _flood_echo(url: str, headers: dict[str, str]) -> list[dict[str, object]]:
    """Send ten messages at once; return every frame until all ten come back."""
    frames: list[dict[str, object]] = []
    async with websockets.connect(url, additional_headers=headers) as socket:
        for n in range(10):
            await socket.send(json.dumps({"n": n}))
        while sum("n" in frame for frame in frames) < 10:
            frames.append(json.loads(await socket.recv()))
    return frames


async def test_sim_credentials_issued_through_admin_api(tmp_path: Path) -> None:
    """The simulator's helper issues working credentials with an admin key."""
    assert http_base_url("ws://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert http_base_url("wss://fleet.example.test") == "https://fleet.example.test"
    async with running_server(secure_settings(tmp_path), migrate_schema=True) as server:
        await robot_token(server, "sim-001")
        key = (await api_key_headers(server, "admin"))["Authorization"].split()[1]
        tokens = await issue_robot_tokens(server.ws_url, key, ["sim-001", "sim-002"])
        assert await issue_robot_tokens(server.ws_url, None, ["sim-001"]) == {}
        for robot_id, token in tokens.items():
            url = f"{server.ws_url}/ws/robots/{robot_id}"
            headers = {"Authorization": f"Bearer {token}"}
            async with websockets.connect(url, additional_headers=headers) as socket:
                assert "welcome" in await socket.recv()
