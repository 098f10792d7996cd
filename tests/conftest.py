"""Fixtures shared by every test folder: a PostgreSQL database and a Redis prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from servers import redis_namespace, require_postgres, temporary_database


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database of this test, dropped afterwards."""
    require_postgres()
    async with temporary_database() as url:
        yield url


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    async with redis_namespace() as prefix:
        yield prefix
