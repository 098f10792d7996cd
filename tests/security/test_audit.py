"""The audit log, the credential store on PostgreSQL and the credential CLI."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from click.testing import Result
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from auth_helpers import api_key_headers
from fleethub.cli.main import app as cli
from fleethub.cli.server import RunningServer, running_server
from fleethub.errors import Conflict
from fleethub.security.audit import AuditEntry, AuditLog
from fleethub.security.principals import CLI, Role
from fleethub.security.store import CredentialStore
from fleethub.storage import migrate
from fleethub.storage.sql import create_engine
from security.support import postgres_or_skip, secure_settings


async def _audit(http: httpx.AsyncClient, admin: dict[str, str]) -> list[dict]:
    response = await http.get("/api/audit", headers=admin)
    assert response.status_code == 200
    return response.json()["items"]


async def test_state_changes_are_audited(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Writes are recorded with actor, role, target, status and client."""
    operator = await api_key_headers(server, "operator")
    viewer = await api_key_headers(server, "viewer")
    await http.get("/api/robots", headers=operator)
    await http.post("/api/robots/r1/commands", json={"type": "stop"}, headers=operator)
    await http.post("/api/robots/r1/commands", json={"type": "stop"}, headers=viewer)
    await http.post("/api/robots/r1/commands", json={"type": "stop"})
    created = await http.post(
        "/api/keys", json={"name": "n", "role": "viewer"}, headers=admin
    )

    entries = await _audit(http, admin)
    assert [entry["method"] for entry in entries] == ["POST"] * 4
    newest, anonymous, denied, rejected = entries
    assert newest["path"] == "/api/keys"
    assert newest["status_code"] == 201
    assert newest["outcome"] == "success"
    assert newest["actor_role"] == "admin"
    assert created.json()["key"] not in str(entries)
    assert anonymous["actor_kind"] == "unauthenticated"
    assert anonymous["status_code"] == 401
    assert denied["outcome"] == "denied"
    assert denied["actor_role"] == "viewer"
    assert rejected["actor_role"] == "operator"
    assert rejected["status_code"] == 404
    assert rejected["outcome"] == "rejected"
    assert rejected["client"] == "127.0.0.1"
    assert len(rejected["request_id"]) == 32


async def test_audit_pages_and_filters(
    server: RunningServer, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Entries page newest first by before_id and filter by actor."""
    for _ in range(3):
        await http.post(
            "/api/keys", json={"name": "n", "role": "viewer"}, headers=admin
        )
    first = (await http.get("/api/audit", params={"limit": 2}, headers=admin)).json()
    assert len(first["items"]) == 2
    params = {"limit": 2, "before_id": first["next_before_id"]}
    rest = (await http.get("/api/audit", params=params, headers=admin)).json()
    assert len(rest["items"]) == 1
    assert rest["items"][0]["id"] < first["items"][-1]["id"]
    actor = first["items"][0]["actor_id"]
    mine = (
        await http.get("/api/audit", params={"actor_id": actor}, headers=admin)
    ).json()
    assert len(mine["items"]) == 3
    none = (
        await http.get("/api/audit", params={"actor_id": "x"}, headers=admin)
    ).json()
    assert none["items"] == []


async def _assert_append_only(engine: AsyncEngine) -> None:
    log = AuditLog(engine)
    await log.append(AuditEntry("cli", "cli", None, "CLI", "test", 200, None, "-"))
    for statement in ("UPDATE audit_log SET outcome = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    entries = await log.entries(limit=10)
    assert [entry.outcome for entry in entries] == ["success"]


async def test_audit_log_is_append_only_on_sqlite(tmp_path: Path) -> None:
    """SQLite triggers reject UPDATE and DELETE on the audit log."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/audit.db")
    try:
        await migrate.upgrade(engine)
        await _assert_append_only(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    admin_dsn = postgres_or_skip()
    name = f"fleethub_security_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.mark.postgres
async def test_audit_log_is_append_only_on_postgres(postgres_url: str) -> None:
    """The PostgreSQL trigger rejects UPDATE and DELETE on the audit log."""
    engine = create_engine(postgres_url)
    try:
        await migrate.upgrade(engine)
        await _assert_append_only(engine)
    finally:
        await engine.dispose()


def _run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


async def _invoke(*args: str) -> str:
    """Run the CLI in a thread, because it starts its own event loop."""
    result = await asyncio.to_thread(_run_cli, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_cli_manages_credentials(tmp_path: Path) -> None:
    """Keys and robot credentials made on the command line work on the server."""
    settings = secure_settings(tmp_path)
    database = ["--database-url", settings.database_url]
    await _invoke("migrate", *database)
    create_key = ("keys", "create", "--name", "ops", "--role", "operator")
    key = (await _invoke(*create_key, *database)).strip()
    token = (await _invoke("robots", "add", "robot-7", *database)).strip()
    assert key.startswith("fhk_")
    assert token.startswith("fhr_")
    assert "ops" in await _invoke("keys", "list", *database)
    assert "robot-7" in await _invoke("robots", "list", *database)
    duplicate = await asyncio.to_thread(_run_cli, "robots", "add", "robot-7", *database)
    assert duplicate.exit_code == 1

    async with running_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            headers = {"Authorization": f"Bearer {key}"}
            assert (await http.get("/api/robots", headers=headers)).status_code == 200
            await _invoke("keys", "revoke", key.split("_")[1], *database)
            await _invoke("robots", "remove", "robot-7", *database)
            assert (await http.get("/api/robots", headers=headers)).status_code == 401
            admin = await api_key_headers(server, "admin")
            entries = await _audit(http, admin)
    assert "robot-7" not in await _invoke("robots", "list", *database)
    cli_paths = [entry["path"] for entry in entries if entry["actor_kind"] == "cli"]
    assert cli_paths == [
        "robots remove robot-7",
        f"keys revoke {key.split('_')[1]}",
        "robots add robot-7",
        f"keys create {key.split('_')[1]}",
    ]


@pytest.mark.postgres
async def test_credential_store_on_postgres(postgres_url: str) -> None:
    """Keys and robot credentials round-trip on PostgreSQL, conflicts included."""
    engine = create_engine(postgres_url)
    try:
        await migrate.upgrade(engine)
        store = CredentialStore(engine)
        info, _ = await store.create_api_key("pg", Role.OPERATOR, CLI)
        assert (await store.find_api_key(info.key_id)) is not None
        await store.revoke_api_key(info.key_id)
        assert (await store.find_api_key(info.key_id)) is None
        first, _ = await store.issue_robot_credential("pg-robot", CLI)
        with pytest.raises(Conflict):
            await store.issue_robot_credential("pg-robot", CLI)
        second, _ = await store.issue_robot_credential("pg-robot", CLI, replace=True)
        assert (await store.find_robot_credential(first.credential_id)) is None
        assert (await store.find_robot_credential(second.credential_id)) is not None
        await store.revoke_robot_credential("pg-robot")
        assert await store.list_robot_credentials() == []
    finally:
        await engine.dispose()
