"""Telemetry written on the raw driver (COPY, executemany) reads back unchanged."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from fleethub.models import TelemetryRow
from fleethub.storage import migrate
from fleethub.storage.bulk import MAX_ROWS_PER_STATEMENT, chunk_sizes
from fleethub.storage.postgres import PostgresStorage
from fleethub.storage.sql import SqlStorage, create_engine

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlStorage]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}")
        await migrate.upgrade(engine)
        try:
            yield SqlStorage(engine)
        finally:
            await engine.dispose()
        return
    name = f"fleethub_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(ADMIN_DSN)
    except OSError:
        if os.environ.get("CI"):
            raise
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    await admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
    try:
        await migrate.upgrade(engine)
        yield PostgresStorage(engine, pool_timeout_s=10.0)
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def make_row(second: int, lidar: list[float] | None) -> TelemetryRow:
    return TelemetryRow(
        "copy-robot",
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second),
        1.5, -2.0, 0.0, 0.1, 0.2, 0.3, 0.8, -0.1,
        None if lidar else 55.0, "moving",
        min(lidar) if lidar else None, lidar,
    )  # fmt: skip


async def test_bulk_round_trip(storage: SqlStorage) -> None:
    """Rows with and without a scan come back field for field."""
    rows = [make_row(0, [1.0, 2.5, 3.0]), make_row(1, None), make_row(2, [])]
    await storage.write_telemetry(rows)
    stored = await storage.telemetry("copy-robot", None, None, 10)
    assert stored == rows


async def test_bulk_empty_batch(storage: SqlStorage) -> None:
    """An empty batch writes nothing and raises nothing."""
    await storage.write_telemetry([])
    assert await storage.count_telemetry() == 0


async def test_bulk_rows_queryable_by_time(storage: SqlStorage) -> None:
    """Range queries and the newest-timestamp lookup see bulk-written rows."""
    rows = [make_row(second, None) for second in range(5)]
    await storage.write_telemetry(rows)
    start = rows[1].ts
    end = rows[3].ts
    assert await storage.telemetry("copy-robot", start, end, 10) == rows[1:3]
    assert await storage.last_telemetry_time("copy-robot") == rows[-1].ts


async def test_bulk_multi_statement_batch(storage: SqlStorage) -> None:
    """A batch larger than one statement can insert is stored whole and in order."""
    count = 2 * MAX_ROWS_PER_STATEMENT + 3
    rows = [make_row(second, None) for second in range(count)]
    await storage.write_telemetry(rows)
    assert await storage.count_telemetry() == count
    assert await storage.telemetry("copy-robot", None, None, count) == rows


def test_chunk_sizes_cover_every_row() -> None:
    """Chunks are powers of two within the statement limit and add up."""
    for count in (1, 7, 1024, 1025, 5000):
        sizes = chunk_sizes(count)
        assert sum(sizes) == count
        assert all(size & (size - 1) == 0 for size in sizes)
        assert max(sizes) <= MAX_ROWS_PER_STATEMENT


async def test_in_memory_sqlite_uses_engine() -> None:
    """An in-memory database has no file for a second connection; rows still land."""
    engine = create_engine("sqlite+aiosqlite://")
    try:
        await migrate.upgrade(engine)
        storage = SqlStorage(engine)
        rows = [make_row(second, [1.0, 2.0]) for second in range(3)]
        await storage.write_telemetry(rows)
        assert await storage.telemetry("copy-robot", None, None, 10) == rows
    finally:
        await engine.dispose()
