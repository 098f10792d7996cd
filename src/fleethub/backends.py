"""Pick and open the backends the settings ask for.

``database_url`` chooses the storage by its scheme: ``sqlite+aiosqlite://``
gives :class:`~fleethub.storage.sql.SqlStorage`, ``postgresql+asyncpg://``
gives :class:`~fleethub.storage.postgres.PostgresStorage`. ``redis_url``
chooses the live state and the bus: unset keeps both in this process's
memory, set moves both to Redis so several processes form one fleet.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.bus.base import EventBus
from fleethub.bus.memory import MemoryBus
from fleethub.errors import LiveStateUnavailable
from fleethub.live.base import LiveState
from fleethub.live.memory import MemoryLiveState
from fleethub.settings import Settings
from fleethub.storage.sql import SqlStorage, create_engine


def is_postgres(url: str) -> bool:
    """Return True when the database URL names PostgreSQL, whatever the driver."""
    return make_url(url).get_backend_name() == "postgresql"


def create_engine_for(settings: Settings) -> AsyncEngine:
    """Build the database engine, with the pool limits from the settings."""
    if is_postgres(settings.database_url):
        from fleethub.storage.postgres import create_postgres_engine, pool_size_for

        return create_postgres_engine(
            settings.database_url,
            pool_size=pool_size_for(settings.database_pool_size),
            pool_timeout_s=settings.database_pool_timeout_s,
        )
    return create_engine(settings.database_url)


async def open_storage(settings: Settings, engine: AsyncEngine) -> SqlStorage:
    """Wrap ``engine`` in the storage class for its dialect.

    On PostgreSQL this also creates the telemetry partitions ahead and starts
    their maintenance task, so the schema must already be migrated. On both
    dialects it starts the background task that rolls up analytics.
    """
    if engine.dialect.name != "postgresql":
        storage = SqlStorage(engine)
        storage.start_rollups(settings.analytics_max_gap_s)
        return storage
    from fleethub.storage.postgres import PostgresStorage, has_copy_connection

    postgres = PostgresStorage(
        engine,
        pool_timeout_s=settings.database_pool_timeout_s,
        copy_connection=has_copy_connection(settings.database_pool_size),
    )
    await postgres.start_maintenance(
        settings.telemetry_partition_days_ahead, settings.telemetry_retention_days
    )
    postgres.start_rollups(settings.analytics_max_gap_s)
    return postgres


def cache_reads(storage: SqlStorage, settings: Settings) -> SqlStorage:
    """Put the Redis read cache in front of ``storage`` when ``redis_url`` is set."""
    if settings.redis_url is None:
        return storage
    from fleethub.storage.cache import CachedStorage

    cached = CachedStorage(storage, settings.redis_url, settings.redis_prefix)
    # CachedStorage passes every other attribute through to ``storage``, so
    # callers can keep treating it as the storage it wraps.
    return cast(SqlStorage, cached)


def open_live_state(settings: Settings) -> LiveState:
    """Return the live state: in Redis when ``redis_url`` is set, else in memory."""
    if settings.redis_url is None:
        return MemoryLiveState()
    from fleethub.live.redis import RedisLiveState

    live = RedisLiveState(
        settings.redis_url,
        settings.redis_prefix,
        presence_ttl_s=settings.redis_presence_ttl_s,
        flush_interval_s=settings.redis_flush_interval_s,
    )
    live.start()
    return live


async def open_bus(settings: Settings, node_id: str) -> EventBus:
    """Return the event bus: on Redis when ``redis_url`` is set, else in memory.

    Raises :class:`TimeoutError` when Redis does not accept the subscription
    within a few seconds.
    """
    if settings.redis_url is None:
        return MemoryBus()
    from fleethub.bus.redis import RedisBus

    bus = RedisBus(settings.redis_url, settings.redis_prefix, node_id)
    await bus.start()
    return bus


async def redis_check(live: LiveState, bus: EventBus) -> str | None:
    """Return "ok" or what is wrong with Redis, or None when Redis is not used."""
    from fleethub.bus.redis import RedisBus
    from fleethub.live.redis import RedisLiveState

    if not isinstance(live, RedisLiveState):
        return None
    try:
        await live.ping()
    except LiveStateUnavailable as exc:
        return exc.message
    if isinstance(bus, RedisBus) and not bus.connected:
        return "Event bus is reconnecting to Redis."
    return "ok"
