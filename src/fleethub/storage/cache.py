"""A Redis read cache in front of the storage's hot queries.

Every dashboard and API client polls the robot list, so with several
processes the same ``SELECT robot_id FROM robots`` runs many times a second.
:class:`CachedStorage` keeps such results in Redis, shared by all processes,
for a short TTL, and deletes a key as soon as any process writes what it
depends on:

=================  ======================  ===========================
query              invalidated by          TTL
=================  ======================  ===========================
``robot_ids``      ``ensure_robot``        ``robot_ids_ttl_s`` (30 s)
``event_counts``   ``write_events``        ``event_counts_ttl_s`` (5 s)
=================  ======================  ===========================

The cache is an optimisation only: when Redis fails, reads go straight to
the database and the failure is logged once until Redis responds again.
Every other storage method is passed through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from fleethub.models import Event
from fleethub.storage.sql import SqlStorage

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CachedStorage:
    """Wrap a storage object, caching ``robot_ids`` and ``event_counts`` in Redis."""

    def __init__(
        self,
        storage: SqlStorage,
        url: str,
        prefix: str,
        *,
        robot_ids_ttl_s: float = 30.0,
        event_counts_ttl_s: float = 5.0,
    ) -> None:
        self.storage = storage
        self.prefix = f"{prefix}cache:"
        self.robot_ids_ttl_ms = int(robot_ids_ttl_s * 1000)
        self.event_counts_ttl_ms = int(event_counts_ttl_s * 1000)
        self.hits = 0
        self.misses = 0
        self._healthy = True
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=1.0
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    async def close(self) -> None:
        await self._client.aclose()
        await self.storage.close()

    async def robot_ids(self) -> list[str]:
        ids = await self._cached(
            "robot_ids", self.robot_ids_ttl_ms, self.storage.robot_ids
        )
        return list(ids)

    async def event_counts(self) -> dict[str, int]:
        return await self._cached(
            "event_counts", self.event_counts_ttl_ms, self.storage.event_counts
        )

    async def ensure_robot(self, robot_id: str, seen_at: datetime) -> None:
        await self.storage.ensure_robot(robot_id, seen_at)
        await self._invalidate("robot_ids")

    async def write_events(self, items: Sequence[Event]) -> None:
        await self.storage.write_events(items)
        await self._invalidate("event_counts")

    async def _cached(
        self, key: str, ttl_ms: int, load: Callable[[], Awaitable[T]]
    ) -> T:
        """Return the cached value of ``key``, or load, store and return it."""
        try:
            raw = await self._client.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            self._report_failure(exc)
            return await load()
        if raw is not None:
            self.hits += 1
            return msgspec.json.decode(raw)
        self.misses += 1
        value = await load()
        try:
            await self._client.set(
                self.prefix + key, msgspec.json.encode(value), px=ttl_ms
            )
            self._healthy = True
        except (RedisError, OSError) as exc:
            self._report_failure(exc)
        return value

    async def _invalidate(self, key: str) -> None:
        try:
            await self._client.delete(self.prefix + key)
        except (RedisError, OSError) as exc:
            # NOTE: a failed delete leaves a stale value for at most its TTL.
            self._report_failure(exc)

    def _report_failure(self, exc: Exception) -> None:
        if self._healthy:
            logger.warning("read_cache_unavailable", extra={"error": str(exc)})
        self._healthy = False
