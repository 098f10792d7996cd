"""Only one fleethub server may serve a SQLite file at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from processes import ServeProcess, start_serve, stop_serve, wait_until_healthy
from typer.testing import CliRunner

from fleethub.cli.main import app
from fleethub.services import build_services
from fleethub.storage.lock import DatabaseInUse
from support import make_settings


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}"


async def _migrate(url: str) -> None:
    # The CLI runs its own event loop, so it goes to a thread.
    arguments = ["migrate", "--database-url", url]
    result = await asyncio.to_thread(CliRunner().invoke, app, arguments)
    assert result.exit_code == 0, result.output


async def _start_on_migrated_file(
    tmp_path: Path, name: str
) -> tuple[str, ServeProcess]:
    """Migrate a new SQLite file and start ``fleethub serve`` on it."""
    url = _sqlite_url(tmp_path)
    await _migrate(url)
    return url, start_serve(tmp_path, name, database_url=url)


async def _wait_for_exit(server: ServeProcess, timeout_s: float = 30.0) -> int:
    return await asyncio.to_thread(server.process.wait, timeout_s)


async def test_second_in_process_server_rejected(tmp_path: Path) -> None:
    """A second build on the file fails with a stable code until the first closes."""
    settings = make_settings(tmp_path)
    first = await build_services(settings, migrate_schema=True)
    try:
        with pytest.raises(DatabaseInUse) as rejected:
            await build_services(settings, migrate_schema=True)
        assert rejected.value.code == "database_in_use"
        assert rejected.value.details["lock_file"].endswith("fleethub.db.lock")
    finally:
        await first.close()
    again = await build_services(settings)
    await again.close()


async def test_memory_database_takes_no_lock(tmp_path: Path) -> None:
    """In-memory SQLite cannot be shared, so two servers may each have one."""
    settings = make_settings(tmp_path, database_url="sqlite+aiosqlite:///:memory:")
    first = await build_services(settings, migrate_schema=True)
    try:
        second = await build_services(settings, migrate_schema=True)
        await second.close()
    finally:
        await first.close()


async def test_postgres_takes_no_lock(tmp_path: Path, postgres_url: str) -> None:
    """Several processes on one PostgreSQL database stay allowed."""
    settings = make_settings(tmp_path, database_url=postgres_url)
    first = await build_services(settings, migrate_schema=True)
    try:
        second = await build_services(settings)
        await second.close()
    finally:
        await first.close()


async def test_second_serve_process_exits_with_message(tmp_path: Path) -> None:
    """``fleethub serve`` on a file another server has locked exits 1 with one line."""
    url, first = await _start_on_migrated_file(tmp_path, "first")
    try:
        await wait_until_healthy(first)
        second = start_serve(tmp_path, "second", database_url=url)
        assert await _wait_for_exit(second) == 1
        output = " ".join(second.output().split())
        assert "Another fleethub process is serving this SQLite database" in output
        assert f"{tmp_path / 'fleethub.db.lock'}" in output
        assert "Traceback" not in output
    finally:
        await stop_serve(first)
    # A clean stop gives the lock back.
    third = start_serve(tmp_path, "third", database_url=url)
    try:
        await wait_until_healthy(third)
    finally:
        await stop_serve(third)


async def test_killed_server_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The OS drops the lock of a process that dies without closing anything."""
    _, first = await _start_on_migrated_file(tmp_path, "first")
    try:
        await wait_until_healthy(first)
    finally:
        first.process.kill()
        await asyncio.to_thread(first.process.wait)
    services = await build_services(make_settings(tmp_path))
    await services.close()


async def test_admin_commands_work_while_serving(tmp_path: Path) -> None:
    """Credential commands and migrate open the file directly and stay allowed."""
    url, server = await _start_on_migrated_file(tmp_path, "server")
    try:
        await wait_until_healthy(server)
        runner = CliRunner()
        for arguments in (
            ["robots", "add", "r-1"],
            ["robots", "list"],
            ["keys", "create", "--name", "ops"],
            ["keys", "list"],
            ["migrate"],
        ):
            result = await asyncio.to_thread(
                runner.invoke, app, [*arguments, "--database-url", url]
            )
            assert result.exit_code == 0, (arguments, result.output)
        assert server.process.poll() is None
    finally:
        await stop_serve(server)
