"""Injection-shaped and Unicode robot ids through URLs, SQL, the CLI and logs."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import websockets
from sqlalchemy import inspect
from typer.testing import CliRunner

from auth_helpers import robot_headers
from fleethub.cli.main import app as cli
from fleethub.cli.server import RunningServer
from fleethub.errors import InvalidRobotId
from fleethub.logs import ConsoleFormatter, JsonFormatter
from fleethub.security.principals import CLI

HOSTILE_IDS = [
    "x'; DROP TABLE robots;--",
    "робот-1",
    "robot\u202e1gnp.exe",
    "line\nbreak",
    "../../etc/passwd",
    "sim+/#",
    "\u0000nul",
]
TABLES = {
    "robots",
    "telemetry",
    "events",
    "commands",
    "api_keys",
    "robot_credentials",
    "audit_log",
}


def _segment(robot_id: str) -> str:
    return quote(robot_id, safe="")


async def _tables(server: RunningServer) -> set[str]:
    engine = server.app.state.services.storage.engine
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_rest_rejects_hostile_robot_ids(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Path, query and admin routes return invalid_robot_id and drop nothing."""
    for robot_id in HOSTILE_IDS:
        await _check_rest(http, admin, robot_id)
    assert await _tables(server) >= TABLES
    assert await server.app.state.services.storage.robot_ids() == []


async def _check_rest(
    http: httpx.AsyncClient, admin: dict[str, str], robot_id: str
) -> None:
    segment = _segment(robot_id)
    by_path = [
        await http.get(f"/api/robots/{segment}/state", headers=admin),
        await http.get(f"/api/robots/{segment}/telemetry", headers=admin),
        await http.post(
            f"/api/robots/{segment}/commands", json={"type": "stop"}, headers=admin
        ),
        await http.post(f"/api/robots/{segment}/credentials", headers=admin),
    ]
    by_query = await http.get(
        "/api/events", params={"robot_id": robot_id}, headers=admin
    )
    # The server decodes %2F before routing, so an id holding "/" matches no route.
    # NUL is rejected for every path and query value before routing.
    path_error = "not_found" if "/" in robot_id else "invalid_robot_id"
    query_error = "invalid_robot_id"
    if "\x00" in robot_id:
        path_error = query_error = "invalid_character"
    for response in by_path:
        assert response.json()["error"] == path_error, response.request.url
    assert by_query.status_code == 400
    assert by_query.json()["error"] == query_error


async def test_robot_link_rejects_hostile_robot_ids(server: RunningServer) -> None:
    """The handshake fails with invalid_robot_id even with a valid credential."""
    headers = await robot_headers(server, "robot-1")
    for robot_id in HOSTILE_IDS:
        url = f"{server.ws_url}/ws/robots/{_segment(robot_id)}"
        with pytest.raises(websockets.InvalidStatus) as failure:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert failure.value.response.status_code == 400, robot_id
        assert b"invalid_robot_id" in failure.value.response.body


async def test_credential_store_rejects_hostile_robot_ids(
    server: RunningServer,
) -> None:
    """The credential store validates ids itself, not only the routes."""
    store = server.app.state.services.security.credentials
    for robot_id in HOSTILE_IDS:
        with pytest.raises(InvalidRobotId):
            await store.issue_robot_credential(robot_id, CLI)


async def test_audit_stores_hostile_path_verbatim(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """The audit log keeps an injection-shaped path as data, not as SQL."""
    robot_id = HOSTILE_IDS[0]
    await http.post(
        f"/api/robots/{_segment(robot_id)}/commands", json={}, headers=admin
    )
    entries = (await http.get("/api/audit", headers=admin)).json()["items"]
    assert entries[0]["path"] == f"/api/robots/{robot_id}/commands"
    assert entries[0]["outcome"] == "rejected"
    assert await _tables(server) >= TABLES


async def test_hostile_ids_leave_log_lines_single_and_printable(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Denials naming hostile ids log one printable line per record."""
    with caplog.at_level(logging.INFO, logger="fleethub"):
        for robot_id in HOSTILE_IDS:
            url = f"{server.ws_url}/ws/robots/{_segment(robot_id)}"
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(url):
                    pass
    denials = [record for record in caplog.records if record.msg == "request_denied"]
    assert len(denials) == len(HOSTILE_IDS)
    for record in denials:
        for formatter in (ConsoleFormatter(), JsonFormatter()):
            line = formatter.format(record)
            assert line.isprintable(), line


@pytest.mark.parametrize("robot_id", HOSTILE_IDS)
def test_cli_rejects_hostile_robot_ids(tmp_path: Path, robot_id: str) -> None:
    """``fleethub robots add`` rejects the id and prints why."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["migrate", "--database-url", database_url]).exit_code == 0
    )
    result = runner.invoke(
        cli, ["robots", "add", robot_id, "--database-url", database_url]
    )
    assert result.exit_code == 1
    assert "Robot id" in result.output
