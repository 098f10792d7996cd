"""The Redis read cache in front of storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleethub.backends import create_engine_for, open_storage
from fleethub.models import Event
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.cache import CachedStorage
from fleethub.storage.sql import SqlStorage
from servers import REDIS_URL

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[SqlStorage]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}")
    engine = create_engine_for(settings)
    await migrate.upgrade(engine)
    storage = await open_storage(settings, engine)
    yield storage
    await storage.close()


async def test_second_process_sees_new_robot(
    database: SqlStorage, redis_prefix: str
) -> None:
    """A robot added through one process is listed by another at once."""
    first = CachedStorage(database, REDIS_URL, redis_prefix)
    second = CachedStorage(database, REDIS_URL, redis_prefix)
    await first.ensure_robot("r1", T0)
    assert await second.robot_ids() == ["r1"]
    assert await second.robot_ids() == ["r1"]
    assert second.hits == 1
    await first.ensure_robot("r2", T0)
    assert await second.robot_ids() == ["r1", "r2"]
    assert second.misses == 2
    await first._client.aclose()
    await second._client.aclose()


async def test_event_counts_invalidated(
    database: SqlStorage, redis_prefix: str
) -> None:
    """Writing events drops the cached counts."""
    cached = CachedStorage(database, REDIS_URL, redis_prefix)
    assert await cached.event_counts() == {}
    await cached.write_events([Event(type="battery_low", robot_id="r1", timestamp=T0)])
    assert await cached.event_counts() == {"battery_low": 1}
    await cached._client.aclose()


async def test_redis_down_reads_database(database: SqlStorage) -> None:
    """With Redis unreachable, reads go to the database and do not fail."""
    cached = CachedStorage(database, "redis://127.0.0.1:1/0", "unused:")
    await cached.ensure_robot("r1", T0)
    assert await cached.robot_ids() == ["r1"]
    assert await cached.count_telemetry() == 0
    await cached._client.aclose()
