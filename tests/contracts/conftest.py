"""Each contract suite runs once per implementation of its interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.backends import create_engine_for, open_storage
from fleethub.bus.base import EventBus
from fleethub.bus.memory import MemoryBus
from fleethub.bus.redis import RedisBus
from fleethub.live.base import LiveState
from fleethub.live.memory import MemoryLiveState
from fleethub.live.redis import RedisLiveState
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.sql import SqlStorage
from servers import REDIS_URL, redis_namespace, require_postgres, temporary_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
        return
    require_postgres()
    async with temporary_database() as url:
        yield url


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[SqlStorage]:
    """A migrated, empty storage built the way the server builds it."""
    settings = Settings(database_url=database_url, telemetry_partition_days_ahead=1)
    engine = create_engine_for(settings)
    await migrate.upgrade(engine)
    storage = await open_storage(settings, engine)
    yield storage
    await storage.close()


@pytest.fixture(params=["memory", "redis"])
async def live(request: pytest.FixtureRequest) -> AsyncIterator[LiveState]:
    if request.param == "memory":
        yield MemoryLiveState()
        return
    async with redis_namespace() as prefix:
        state = RedisLiveState(
            REDIS_URL, prefix, presence_ttl_s=5.0, flush_interval_s=0.05
        )
        state.start()
        yield state
        await state.close()


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        memory = MemoryBus()
        yield memory
        await memory.close()
        return
    async with redis_namespace() as prefix:
        redis_bus = RedisBus(REDIS_URL, prefix, node_id="contract")
        await redis_bus.start()
        yield redis_bus
        await redis_bus.close()
