"""Reach the PostgreSQL and Redis servers the tests run against.

Tests that need a server call :func:`require_server` first: it skips the test
when the server is not listening, and fails it instead when ``CI`` is set,
because CI must never pass by skipping. Each test gets its own PostgreSQL
database (:func:`temporary_database`) and Redis key prefix, so tests running
at the same time never see each other's data.

The servers default to the standard ports on 127.0.0.1; the environment
variables ``FLEETHUB_TEST_POSTGRES_HOST``, ``FLEETHUB_TEST_POSTGRES_PORT``,
``FLEETHUB_TEST_POSTGRES_USER``, ``FLEETHUB_TEST_REDIS_HOST`` and
``FLEETHUB_TEST_REDIS_PORT``, ``FLEETHUB_TEST_MQTT_HOST`` and
``FLEETHUB_TEST_MQTT_PORT`` override them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as redis

POSTGRES_HOST = os.environ.get("FLEETHUB_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("FLEETHUB_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("FLEETHUB_TEST_POSTGRES_USER", "postgres")
REDIS_HOST = os.environ.get("FLEETHUB_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("FLEETHUB_TEST_REDIS_PORT", "6379"))
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
MQTT_HOST = os.environ.get("FLEETHUB_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("FLEETHUB_TEST_MQTT_PORT", "1883"))


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip the test when the server is down, or fail it when ``CI`` is set."""
    if is_listening(host, port):
        return
    message = f"{name} is not listening on {host}:{port}."
    if os.environ.get("CI"):
        pytest.fail(f"{message} CI needs it; start it before the tests.")
    pytest.skip(message)


def require_postgres() -> None:
    require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)


def require_redis() -> None:
    require_server("Redis", REDIS_HOST, REDIS_PORT)


def require_mqtt() -> None:
    require_server("The MQTT broker", MQTT_HOST, MQTT_PORT)


def free_port() -> int:
    """Return a TCP port that was free a moment ago (for child processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def _admin_connection(host: str, port: int) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=host, port=port, user=POSTGRES_USER, database="postgres"
    )


@contextlib.asynccontextmanager
async def temporary_database(
    host: str = POSTGRES_HOST, port: int = POSTGRES_PORT
) -> AsyncIterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, and drop it after."""
    name = unique_name("fleethub_test")
    admin = await _admin_connection(host, port)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://{POSTGRES_USER}@{host}:{port}/{name}"
    finally:
        admin = await _admin_connection(host, port)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """Yield a fresh Redis key prefix, and delete every key under it after."""
    require_redis()
    prefix = unique_name("fleethub-test") + ":"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
