"""Rate limits per API key, JWT subject and robot, built on the ``limits`` library.

Counters use the moving-window strategy. They live in Redis when
``redis_url`` is set, so every fleethub process behind a load balancer counts
against the same budget, and in memory otherwise. If Redis fails, requests
are let through (fail open) and the failure is logged: a rate limit protects
capacity, and authentication does not depend on it. A robot can send hundreds
of messages a second, so an outage is logged when it starts, then at most once
per :data:`STORAGE_FAILURE_LOG_INTERVAL_S`, and once more when Redis responds
again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from fleethub.security.principals import Principal
from fleethub.settings import Settings

logger = logging.getLogger(__name__)

STORAGE_FAILURE_LOG_INTERVAL_S = 30.0


class StorageFailureLog:
    """Outage log for the rate-limit storage, without one line per failed check.

    ``failed_open_total`` counts every check let through because the storage
    failed, over the life of the process, for the metrics.
    """

    def __init__(
        self,
        interval_s: float = STORAGE_FAILURE_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self.failed_open_total = 0
        self._outage_failures = 0
        self._unlogged_failures = 0
        self._last_line_at = 0.0

    @property
    def failing(self) -> bool:
        """True from a failed check until the next check that reaches the storage."""
        return self._outage_failures > 0

    def failed(self, exc: StorageError) -> None:
        """Count one check let through, and log it if a line is due.

        A line is due at the first failure of an outage, then once per interval.
        """
        self.failed_open_total += 1
        self._outage_failures += 1
        self._unlogged_failures += 1
        now = self._clock()
        first = self._outage_failures == 1
        if not first and now - self._last_line_at < self.interval_s:
            return
        logger.warning(
            "rate_limit_storage_failed",
            extra={
                "error": str(exc),
                "failed_open": self._unlogged_failures,
                "outage_failed_open": self._outage_failures,
            },
        )
        self._last_line_at = now
        self._unlogged_failures = 0

    def succeeded(self) -> None:
        """Log the end of an outage once, with the number of checks let through."""
        if not self._outage_failures:
            return
        logger.info(
            "rate_limit_storage_recovered",
            extra={"failed_open": self._outage_failures},
        )
        self._outage_failures = 0
        self._unlogged_failures = 0


class RateLimiter:
    """Count hits per principal and return how long to wait once over the limit."""

    def __init__(
        self,
        storage: Storage,
        api_limits: list[RateLimitItem],
        robot_limits: list[RateLimitItem],
        pool: ConnectionPool | None = None,
        failure_log: StorageFailureLog | None = None,
    ) -> None:
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self.api_limits = api_limits
        self.robot_limits = robot_limits
        self._pool = pool
        self.failure_log = failure_log or StorageFailureLog()

    async def hit(self, principal: Principal) -> float | None:
        """Count one request or message; return seconds to wait, or None if allowed."""
        limits = self.robot_limits if principal.kind == "robot" else self.api_limits
        key = principal.rate_limit_key
        try:
            for item in limits:
                if not await self.strategy.hit(item, key):
                    wait = await self._retry_after(item, key)
                    self.failure_log.succeeded()
                    return wait
        except StorageError as exc:
            self.failure_log.failed(exc)
            return None
        self.failure_log.succeeded()
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


def build_rate_limiter(
    settings: Settings, failure_log: StorageFailureLog | None = None
) -> RateLimiter:
    """Build the limiter on Redis when ``redis_url`` is set, else in memory."""
    api_limits = parse_many(settings.rate_limit_api)
    robot_limits = parse_many(settings.rate_limit_robot)
    if settings.redis_url is None:
        return RateLimiter(
            MemoryStorage(), api_limits, robot_limits, failure_log=failure_log
        )
    pool = ConnectionPool.from_url(settings.redis_url)
    storage = RedisStorage(
        "async+" + settings.redis_url,
        implementation="redispy",
        key_prefix=settings.rate_limit_key_prefix,
        wrap_exceptions=True,
        connection_pool=pool,
    )
    return RateLimiter(storage, api_limits, robot_limits, pool, failure_log)
