"""Database backends for the server tests: SQLite always, PostgreSQL when running."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.testing import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """Yield a fresh database URL; PostgreSQL is required when CI is set."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}"
        return
    try:
        database = postgres_database()
        url = await database.__aenter__()
    except OSError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    try:
        yield url
    finally:
        await database.__aexit__(None, None, None)
