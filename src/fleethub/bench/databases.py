"""Throw-away databases for one benchmark server, and row counts afterwards.

Each server under test gets a fresh database: a new SQLite file in the run's
temporary directory, or a uniquely named PostgreSQL database created on the
server given by ``postgres_url`` and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def asyncpg_dsn(url: str) -> str:
    """Turn a SQLAlchemy PostgreSQL URL into a DSN asyncpg accepts."""
    return (
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def sqlite_path(url: str) -> str:
    """Return the file path of a ``sqlite+aiosqlite:///PATH`` URL."""
    database = make_url(url).database
    if not database:
        raise ValueError(f"SQLite URL {url!r} names no file.")
    return database


@contextlib.contextmanager
def fresh_database(backend: str, work_dir: Path, postgres_url: str) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database; remove it afterwards."""
    name = f"fleethub_bench_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        path = work_dir / f"{name}.db"
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if backend != "postgresql":
        raise ValueError(f"Unknown backend {backend!r}; use sqlite or postgresql.")
    admin = asyncpg_dsn(postgres_url)
    asyncio.run(_execute(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(postgres_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def count_rows(url: str, table: str = "telemetry") -> int | None:
    """Count the rows of ``table``; None when the table does not exist."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as connection:
            try:
                return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.OperationalError:
                return None
    return asyncio.run(_count_postgres(asyncpg_dsn(url), table))


async def _count_postgres(dsn: str, table: str) -> int | None:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(f"SELECT count(*) FROM {table}")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await connection.close()


def postgres_available(postgres_url: str) -> bool:
    """Return whether the PostgreSQL server at ``postgres_url`` accepts a login."""
    try:
        asyncio.run(_execute(asyncpg_dsn(postgres_url), "SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        return False
    return True
