"""Settings and service checks shared by the security tests."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from fleethub.settings import Settings

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def secure_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with authentication on, a fresh SQLite file and port 0."""
    values: dict[str, Any] = {
        "auth_enabled": True,
        "host": "127.0.0.1",
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/fleethub.db",
    }
    return Settings(**(values | overrides))


def redis_url_or_skip() -> str:
    """Return a Redis URL; fail under CI and skip elsewhere when Redis is down."""
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}.")
        pytest.skip("Redis is not reachable.")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def unique_prefix() -> str:
    return f"fleethub-test-{uuid.uuid4().hex}"


PG_HOST, PG_PORT = "127.0.0.1", 5432


def postgres_or_skip() -> str:
    """Return the PostgreSQL admin DSN; fail under CI and skip elsewhere when down."""
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}.")
        pytest.skip("PostgreSQL is not reachable.")
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
