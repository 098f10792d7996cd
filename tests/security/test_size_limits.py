"""Size limits, CORS settings and the listen-address check."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pydantic import ValidationError
from typer.testing import CliRunner

from auth_helpers import api_key_headers, robot_headers
from fleethub.cli.main import app as cli
from fleethub.cli.server import RunningServer, running_server
from fleethub.errors import InsecureConfiguration
from fleethub.models import utcnow
from fleethub.protocol import (
    Lidar,
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    StateUpdate,
    Velocity,
    encode,
)
from fleethub.security.config import ensure_safe_listen_address, is_loopback
from fleethub.settings import Settings
from security.support import secure_settings

LIMITS = {
    "max_request_body_bytes": 2048,
    "max_string_length": 100,
    "max_list_length": 20,
    "max_json_depth": 8,
    "max_page_size": 50,
    "max_frame_bytes": 1024,
    "max_lidar_beams": 10,
    "cors_allow_origins": ["https://dashboard.example.test"],
}
COMMANDS = "/api/robots/r1/commands"


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = secure_settings(tmp_path, **LIMITS)
    async with running_server(settings, migrate_schema=True) as server:
        yield server


@pytest.fixture
async def client(limited: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = await api_key_headers(limited, "operator")
    async with httpx.AsyncClient(base_url=limited.http_url, headers=headers) as http:
        yield http


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()


async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    """A body over the limit is rejected, with or without Content-Length."""
    body = json.dumps({"type": "stop", "params": {"pad": ["x" * 50] * 60}}).encode()
    declared = await client.post(
        COMMANDS, content=body, headers={"content-type": "application/json"}
    )

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    streamed = await client.post(
        COMMANDS, content=chunks(), headers={"content-type": "application/json"}
    )
    for response in (declared, streamed):
        error = _error(response, 413)
        assert error["error"] == "request_too_large"
        assert error["details"]["limit"] == 2048


@pytest.mark.parametrize(
    ("params", "code", "path"),
    [
        ({"note": "x" * 101}, "string_too_long", "$.params.note"),
        ({"k" * 101: 1}, "string_too_long", "$.params key"),
        ({"waypoints": list(range(21))}, "list_too_long", "$.params.waypoints"),
        ({f"k{i}": i for i in range(21)}, "list_too_long", "$.params"),
    ],
)
async def test_json_values_over_limits(
    client: httpx.AsyncClient, params: dict[str, Any], code: str, path: str
) -> None:
    """Long strings, long arrays and wide objects are rejected with their path."""
    error = _error(
        await client.post(COMMANDS, json={"type": "stop", "params": params}), 400
    )
    assert error["error"] == code
    assert error["details"]["path"] == path


async def test_json_depth_and_constants(client: httpx.AsyncClient) -> None:
    """Deep nesting and NaN are rejected before any route parses the body."""
    nested: Any = 1
    for _ in range(10):
        nested = {"n": nested}
    deep = await client.post(COMMANDS, json={"type": "stop", "params": nested})
    assert _error(deep, 400)["error"] == "json_too_deep"
    nan = await client.post(
        COMMANDS,
        content=b'{"type": "stop", "params": {"x": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert _error(nan, 400)["error"] == "invalid_json"


async def test_query_limits(client: httpx.AsyncClient) -> None:
    """Long query values and pages over max_page_size are rejected."""
    long_value = await client.get("/api/events", params={"robot_id": "r" * 101})
    assert _error(long_value, 400)["error"] == "string_too_long"
    for path in ("/api/events", "/api/robots/r1/telemetry", "/api/robots/r1/state"):
        response = await client.get(path, params={"limit": 51})
        error = _error(response, 400)
        assert error["error"] == "page_size_too_large"
        assert error["details"]["limit"] == 50
    assert (await client.get("/api/events", params={"limit": 50})).status_code == 200


async def test_nul_character_rejected(client: httpx.AsyncClient) -> None:
    """NUL in a body, query value or path is a 400, not a database error."""
    body = await client.post(COMMANDS, json={"type": "stop", "params": {"a": "x\x00"}})
    body_error = _error(body, 400)
    assert body_error["error"] == "invalid_character"
    assert body_error["details"]["path"] == "$.params.a"
    query = await client.get("/api/events", params={"type": "\x00"})
    assert _error(query, 400)["error"] == "invalid_character"
    path = await client.get("/api/commands/%00")
    assert _error(path, 400)["error"] == "invalid_character"


async def test_robot_frame_and_beam_limits(limited: RunningServer) -> None:
    """Oversized frames and scans with too many beams get error frames."""
    headers = await robot_headers(limited, "r1")
    url = f"{limited.ws_url}/ws/robots/r1"
    state = RobotState(
        timestamp=utcnow() - timedelta(seconds=1),
        position=Position(x=0, y=0),
        orientation=Orientation(yaw=0),
        velocity=Velocity(linear=0),
        status=RobotStatus.IDLE,
        lidar=Lidar(ranges=[1.0] * 11),
    )
    async with websockets.connect(url, additional_headers=headers) as socket:
        assert json.loads(await socket.recv())["type"] == "welcome"
        await socket.send(
            json.dumps({"type": "state_update", "seq": 1, "pad": "x" * 2000})
        )
        assert json.loads(await socket.recv())["code"] == "frame_too_large"
        await socket.send(encode(StateUpdate(seq=2, data=state)).decode())
        rejected = json.loads(await socket.recv())
    assert rejected["code"] == "too_many_beams"
    assert rejected["seq"] == 2


async def test_cors_allow_list(limited: RunningServer) -> None:
    """Only listed origins get CORS headers; preflights need no credential."""
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        allowed = await http.options(
            "/api/robots",
            headers={
                "Origin": "https://dashboard.example.test",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        foreign = await http.options(
            "/api/robots",
            headers={
                "Origin": "https://evil.example.test",
                "Access-Control-Request-Method": "GET",
            },
        )
    assert allowed.status_code == 200
    assert (
        allowed.headers["access-control-allow-origin"]
        == "https://dashboard.example.test"
    )
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in foreign.headers


def test_cors_wildcard_with_credentials_rejected() -> None:
    """A wildcard origin together with credentials fails at start-up."""
    with pytest.raises(ValidationError, match="cors_allow_origins"):
        Settings(cors_allow_origins=["*"], cors_allow_credentials=True)
    assert Settings(cors_allow_origins=["*"]).cors_allow_origins == ["*"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.10.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("example.test", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    """Only addresses of this machine count as loopback."""
    assert is_loopback(host) is loopback


async def test_auth_off_rejected_on_public_address(tmp_path: Path) -> None:
    """With auth off the server rejects a non-loopback address before binding."""
    ensure_safe_listen_address(Settings(host="0.0.0.0", auth_enabled=True))
    ensure_safe_listen_address(Settings(host="127.0.0.1", auth_enabled=False))
    settings = secure_settings(tmp_path, host="0.0.0.0", auth_enabled=False)
    with pytest.raises(InsecureConfiguration, match="loopback"):
        async with running_server(settings, migrate_schema=True):
            pass


def test_serve_rejects_public_address_without_auth() -> None:
    """``fleethub serve`` exits with an error instead of listening on 0.0.0.0."""
    env = {"FLEETHUB_AUTH_ENABLED": "false", "FLEETHUB_HOST": "0.0.0.0"}
    result = CliRunner().invoke(cli, ["serve", "--port", "0"], env=env)
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_missing_jwt_key_file_rejected(tmp_path: Path) -> None:
    """A JWT key file that does not exist fails at start-up."""
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(
            jwt_jwks_file=tmp_path / "missing.json",
            jwt_issuer="https://idp.example.test",
            jwt_audience="fleethub",
        )
