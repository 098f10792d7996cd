"""Start-up checks that end the CLI with a message instead of a traceback."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from fleethub.backends import create_engine_for
from fleethub.errors import FleethubError, StorageUnavailable
from fleethub.services import SchemaOutOfDate
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.lock import lock_database


async def check_schema(settings: Settings) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the newest revision.

    Raises :class:`~fleethub.errors.StorageUnavailable` when the database
    cannot be reached.
    """
    engine = create_engine_for(settings)
    try:
        current = await migrate.current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageUnavailable(
            f"Cannot read the schema version ({exc}); check that the database "
            "is running and that FLEETHUB_DATABASE_URL points at it."
        ) from exc
    finally:
        await engine.dispose()
    head = migrate.head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"The database schema is at revision {current or 'none (empty database)'} "
            f"but this fleethub needs {head}; run 'fleethub migrate' "
            "(or 'fleethub serve --migrate') first.",
            current=current,
            head=head,
        )


def exit_unless_schema_current(settings: Settings, console: Console) -> None:
    """Print why and exit with status 1 when the schema is not current."""
    try:
        asyncio.run(check_schema(settings))
    except FleethubError as exc:
        console.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(code=1) from None


def exit_if_database_in_use(settings: Settings, console: Console) -> None:
    """Print why and exit with status 1 when another server has locked the SQLite file.

    This only probes the lock and releases it, and the services take it again
    when they start. A server that takes it in between still makes them fail,
    but with uvicorn's start-up error in place of this message.
    """
    try:
        lock = lock_database(settings.database_url)
    except FleethubError as exc:
        console.print(f"[red]Error:[/red] {exc.message}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    if lock is not None:
        lock.release()
