"""Schema migrations: run them, and tell whether a database is up to date."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

_SCRIPTS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest revision among the migration scripts."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the revision the database is at, or None when it has no schema."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(
                sync_conn
            ).get_current_revision()
        )


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema up to the newest revision."""
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync_conn: command.upgrade(_config(sync_conn), "head")
        )


async def is_up_to_date(engine: AsyncEngine) -> bool:
    """Return True when the database is at the newest revision."""
    return await current_revision(engine) == head_revision()
