"""Rate limits per API key, JWT subject and robot, built on the ``limits`` library.

Counters use the moving-window strategy. They live in Redis when
``redis_url`` is set, so every fleethub process behind a load balancer counts
against the same budget, and in memory otherwise. If Redis fails, requests
are let through and the failure is logged: a rate limit protects capacity,
and authentication does not depend on it.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from fleethub.security.principals import Principal
from fleethub.settings import Settings

logger = logging.getLogger(__name__)


class RateLimiter:
    """Count hits per principal and return how long to wait once over the limit."""

    def __init__(
        self,
        storage: Storage,
        api_limits: list[RateLimitItem],
        robot_limits: list[RateLimitItem],
        pool: ConnectionPool | None = None,
    ) -> None:
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self.api_limits = api_limits
        self.robot_limits = robot_limits
        self._pool = pool

    async def hit(self, principal: Principal) -> float | None:
        """Count one request or message; return seconds to wait, or None if allowed."""
        limits = self.robot_limits if principal.kind == "robot" else self.api_limits
        key = principal.rate_limit_key
        try:
            for item in limits:
                if not await self.strategy.hit(item, key):
                    return await self._retry_after(item, key)
        except StorageError as exc:
            logger.warning("rate_limit_storage_failed", extra={"error": str(exc)})
        return None

    async def _retry_after(self, item: RateLimitItem, key: str) -> float:
        stats = await self.strategy.get_window_stats(item, key)
        return max(stats.reset_time - time.time(), 0.01)

    async def close(self) -> None:
        """Stop the memory storage's expiry task or close the Redis connections."""
        timer = getattr(self.storage, "timer", None)
        if timer is not None:
            timer.cancel()
        if self._pool is not None:
            await self._pool.disconnect()


def retry_after_header(seconds: float) -> str:
    """Return a ``Retry-After`` value: whole seconds, rounded up (RFC 9110 10.2.3)."""
    return str(max(1, math.ceil(seconds)))


def build_rate_limiter(settings: Settings) -> RateLimiter:
    """Build the limiter on Redis when ``redis_url`` is set, else in memory."""
    api_limits = parse_many(settings.rate_limit_api)
    robot_limits = parse_many(settings.rate_limit_robot)
    if settings.redis_url is None:
        return RateLimiter(MemoryStorage(), api_limits, robot_limits)
    pool = ConnectionPool.from_url(settings.redis_url)
    storage = RedisStorage(
        "async+" + settings.redis_url,
        implementation="redispy",
        key_prefix=settings.rate_limit_key_prefix,
        wrap_exceptions=True,
        connection_pool=pool,
    )
    return RateLimiter(storage, api_limits, robot_limits, pool)
