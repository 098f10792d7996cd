"""Readiness checks behind ``/readyz``.

A check is an async callable that returns when its dependency is usable and
raises otherwise. :class:`Readiness` runs every registered check at once, each
with a timeout, so one hung dependency cannot stall the probe. Features
register their own (``services.observability.readiness.add("mqtt", ...)``).

The probe body names each check's outcome but not the raw error, which may
hold host names; the error itself goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fleethub.errors import NotReady

if TYPE_CHECKING:
    import redis.asyncio

    from fleethub.services import Services

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
OK = "ok"


class Readiness:
    """A named, pluggable list of readiness checks."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, ReadinessCheck] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def add(
        self,
        name: str,
        check: ReadinessCheck,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Register ``check`` under ``name``; ``close`` runs when the services close."""
        self._checks[name] = check
        if close is not None:
            self._closers.append(close)

    def names(self) -> list[str]:
        """Return the registered check names, in order of registration."""
        return list(self._checks)

    async def run(self) -> dict[str, str]:
        """Run every check; return ``ok`` or a short failure per check name."""
        results = await asyncio.gather(
            *(self._run_one(name, check) for name, check in self._checks.items())
        )
        return dict(zip(self._checks, results, strict=True))

    async def _run_one(self, name: str, check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            logger.warning("readiness_check_timed_out", extra={"check": name})
            return f"timed out after {self.timeout_s:g} s"
        except NotReady as exc:
            return exc.message
        except Exception as exc:
            logger.warning(
                "readiness_check_failed", extra={"check": name, "error": repr(exc)}
            )
            return "unavailable"
        return OK

    async def close(self) -> None:
        """Release what the checks hold (their own client connections)."""
        for close in self._closers:
            await close()


def build_readiness(services: Services) -> Readiness:
    """Register the database, Redis (when configured) and telemetry writer checks."""
    settings = services.settings
    readiness = Readiness(settings.ready_timeout_s)
    readiness.add("database", services.storage.ping)
    if settings.redis_url:
        client = _redis_client(settings.redis_url)
        readiness.add("redis", lambda: _ping_redis(client), client.aclose)
    readiness.add("telemetry_writer", lambda: _check_writer(services))
    return readiness


def _redis_client(url: str) -> redis.asyncio.Redis:
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, socket_connect_timeout=2.0)


async def _ping_redis(client: redis.asyncio.Redis) -> None:
    await client.ping()


async def _check_writer(services: Services) -> None:
    writer = services.telemetry_writer
    max_lag = services.settings.ready_max_ack_lag_s
    if not writer.healthy:
        raise NotReady("retrying writes after a storage failure")
    if writer.full:
        raise NotReady(f"buffer full ({writer.max_buffer} states)")
    lag = writer.oldest_pending_age()
    if lag > max_lag:
        raise NotReady(f"oldest state waiting {lag:.1f} s (limit {max_lag:g} s)")
