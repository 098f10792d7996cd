"""``fleethub keys`` and ``fleethub robots``: manage credentials from the shell.

These commands work on the database directly, so they need no running
server and no API key, only ``--database-url``. New tokens go to standard
output, alone on a line, so that a script can capture them; everything else
goes to standard error. Each change is written to the audit log with the
actor ``cli``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.errors import FleethubError
from fleethub.security.audit import AuditEntry, AuditLog
from fleethub.security.principals import CLI, Role
from fleethub.security.store import CredentialStore
from fleethub.settings import Settings

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
robots_app = typer.Typer(
    help="Add, list and remove robot credentials.", no_args_is_help=True
)
console = Console(stderr=True)

DatabaseOpt = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy database URL [FLEETHUB_DATABASE_URL]."),
]
T = TypeVar("T")


def _run(database_url: str | None, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``action`` on a fresh engine; print a FleethubError and exit 1."""
    from fleethub.storage import migrate
    from fleethub.storage.sql import create_engine

    settings = Settings(**({"database_url": database_url} if database_url else {}))

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            if not await migrate.is_up_to_date(engine):
                raise FleethubError(
                    "The database schema is not up to date; run 'fleethub migrate' "
                    "first.",
                    code="schema_out_of_date",
                )
            return await action(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except FleethubError as exc:
        console.print(f"[red]Error:[/] {exc.message}")
        raise typer.Exit(1) from None


async def _audit(engine: AsyncEngine, action: str, target: str) -> None:
    entry = AuditEntry(
        actor_kind=CLI.kind,
        actor_id=CLI.subject,
        actor_role=None,
        method="CLI",
        path=f"{action} {target}",
        status_code=200,
        client=None,
        request_id="-",
    )
    await AuditLog(engine).append(entry)


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    role: Annotated[
        Role, typer.Option(help="viewer, operator or admin.")
    ] = Role.VIEWER,
    database_url: DatabaseOpt = None,
) -> None:
    """Create an API key and print it once; only its digest is stored."""

    async def action(engine: AsyncEngine) -> str:
        info, key = await CredentialStore(engine).create_api_key(name, role, CLI)
        await _audit(engine, "keys create", info.key_id)
        console.print(
            f"Created {role.value} key {info.key_id} ({name}). It is shown once:"
        )
        return key

    print(_run(database_url, action))


@keys_app.command("list")
def list_keys(database_url: DatabaseOpt = None) -> None:
    """List API keys without their secrets."""
    keys = _run(database_url, lambda engine: CredentialStore(engine).list_api_keys())
    table = Table("key id", "name", "role", "created", "revoked")
    for info in keys:
        revoked = info.revoked_at.isoformat() if info.revoked_at else ""
        table.add_row(
            info.key_id,
            info.name,
            info.role.value,
            info.created_at.isoformat(),
            revoked,
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key id shown by 'keys list'.")],
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke an API key; requests with it fail from now on."""

    async def action(engine: AsyncEngine) -> None:
        await CredentialStore(engine).revoke_api_key(key_id)
        await _audit(engine, "keys revoke", key_id)

    _run(database_url, action)
    console.print(f"Revoked key {key_id}.")


@robots_app.command("add")
def add_robot(
    robot_id: Annotated[str, typer.Argument(help="Robot id: A-Z a-z 0-9 . _ -")],
    replace: Annotated[
        bool, typer.Option(help="Replace an existing credential.")
    ] = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Issue a robot's credential and print it once."""

    async def action(engine: AsyncEngine) -> str:
        store = CredentialStore(engine)
        _, token = await store.issue_robot_credential(robot_id, CLI, replace=replace)
        await _audit(engine, "robots add", robot_id)
        console.print(f"Issued the credential of robot {robot_id}. It is shown once:")
        return token

    print(_run(database_url, action))


@robots_app.command("list")
def list_robots(database_url: DatabaseOpt = None) -> None:
    """List robots that have a credential."""
    credentials = _run(
        database_url, lambda engine: CredentialStore(engine).list_robot_credentials()
    )
    table = Table("robot id", "credential id", "created", "created by")
    for info in credentials:
        table.add_row(
            info.robot_id,
            info.credential_id,
            info.created_at.isoformat(),
            info.created_by,
        )
    Console().print(table)


@robots_app.command("remove")
def remove_robot(
    robot_id: Annotated[str, typer.Argument(help="Robot id.")],
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a robot's credential."""

    async def action(engine: AsyncEngine) -> None:
        await CredentialStore(engine).revoke_robot_credential(robot_id)
        await _audit(engine, "robots remove", robot_id)

    _run(database_url, action)
    console.print(f"Removed the credential of robot {robot_id}.")
