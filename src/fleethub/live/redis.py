"""Live state in Redis, shared by every fleethub process.

Keys, all under the configured prefix:

- ``live:robots``: a set of every robot id ever seen;
- ``live:robot:{id}``: a hash with the latest ``state`` (JSON), ``last_seen``
  (ISO 8601) and the ``node_id`` of the process that last held the robot;
- ``live:presence:{id}``: the node id of the process holding the robot's
  link, with an expiry of ``presence_ttl_s``. The holding process renews it
  every third of that time, so when a process dies its robots go offline
  within ``presence_ttl_s`` seconds.

``update`` is called for every accepted state and never waits on Redis: it
keeps the newest state per robot in memory and a flush task writes them all
in one pipeline every ``flush_interval_s``. Reads from this process see the
pending states at once; other processes see them after the next flush.

While Redis is down, writes are retried on the next tick (only the newest
state per robot is kept, so memory stays bounded by the fleet size) and
reads raise :class:`~fleethub.errors.LiveStateUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from fleethub.errors import LiveStateUnavailable
from fleethub.live.base import RobotSnapshot
from fleethub.protocol import RobotState

logger = logging.getLogger(__name__)

# Delete the presence key only if this node still owns it, because a robot
# that reconnected to another process must stay online.
_RELEASE_PRESENCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Renew presence unless another node took the robot over since, so a process
# with a stale link never steals a robot back.
_RENEW_PRESENCE = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'node_id', ARGV[1])
return 1
"""

_decode_state = msgspec.json.Decoder(RobotState).decode


class RedisLiveState:
    """:class:`~fleethub.live.base.LiveState` in Redis hashes with presence keys."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        presence_ttl_s: float = 15.0,
        flush_interval_s: float = 0.1,
    ) -> None:
        self.prefix = f"{prefix}live:"
        self.presence_ttl_ms = int(presence_ttl_s * 1000)
        self.flush_interval_s = flush_interval_s
        self.healthy = True
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0
        )
        self._release = self._client.register_script(_RELEASE_PRESENCE)
        self._pending: dict[str, tuple[RobotState, datetime]] = {}
        self._held: dict[str, str] = {}  # robot id -> node id, links of this process
        self._task: asyncio.Task[None] | None = None
        self._last_renewal = 0.0

    def _robot_key(self, robot_id: str) -> str:
        return f"{self.prefix}robot:{robot_id}"

    def _presence_key(self, robot_id: str) -> str:
        return f"{self.prefix}presence:{robot_id}"

    def start(self) -> None:
        """Start the background flush task."""
        self._task = asyncio.create_task(self._flush_forever(), name="redis-live-flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
        except (RedisError, OSError) as exc:
            logger.warning(
                "live_final_flush_failed",
                extra={"error": str(exc), "robots": len(self._pending)},
            )
        await self._client.aclose()

    async def ping(self) -> None:
        """Round-trip to Redis, raising :class:`LiveStateUnavailable` when down."""
        async with self._reading():
            await self._client.ping()

    async def update(self, robot_id: str, state: RobotState, seen_at: datetime) -> None:
        self._pending[robot_id] = (state, seen_at)

    async def set_online(self, robot_id: str, node_id: str, seen_at: datetime) -> None:
        """Mark the robot connected to ``node_id``, taking it over from any other.

        During a Redis outage the flusher writes the presence once Redis is back.
        """
        self._held[robot_id] = node_id
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                self._write_presence(pipe, robot_id, node_id)
                pipe.hset(self._robot_key(robot_id), "last_seen", seen_at.isoformat())
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._mark_unhealthy("live_presence_failed", exc, robot_id)

    async def set_offline(self, robot_id: str, node_id: str) -> None:
        if self._held.get(robot_id) == node_id:
            del self._held[robot_id]
        try:
            await self._release(keys=[self._presence_key(robot_id)], args=[node_id])
        except (RedisError, OSError) as exc:
            self._mark_unhealthy("live_presence_failed", exc, robot_id)

    async def get(self, robot_id: str) -> RobotSnapshot | None:
        async with self._reading():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._robot_key(robot_id))
                pipe.get(self._presence_key(robot_id))
                fields, presence = await pipe.execute()
        return self._snapshot(robot_id, fields, presence)

    async def all(self) -> list[RobotSnapshot]:
        async with self._reading():
            members = await self._client.smembers(self.prefix + "robots")
            robot_ids = sorted(
                {member.decode() for member in members} | set(self._pending)
            )
            async with self._client.pipeline(transaction=False) as pipe:
                for robot_id in robot_ids:
                    pipe.hgetall(self._robot_key(robot_id))
                    pipe.get(self._presence_key(robot_id))
                replies = await pipe.execute()
        snapshots = (
            self._snapshot(robot_id, replies[2 * i], replies[2 * i + 1])
            for i, robot_id in enumerate(robot_ids)
        )
        return [snapshot for snapshot in snapshots if snapshot is not None]

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise LiveStateUnavailable(f"Redis is unavailable: {exc}") from exc

    def _snapshot(
        self, robot_id: str, fields: dict[bytes, bytes], presence: bytes | None
    ) -> RobotSnapshot | None:
        pending = self._pending.get(robot_id)
        if not fields and pending is None:
            return None
        snapshot = RobotSnapshot(
            robot_id=robot_id,
            online=presence is not None,
            node_id=presence.decode() if presence is not None else None,
        )
        if b"state" in fields:
            snapshot.state = _decode_state(fields[b"state"])
        if b"last_seen" in fields:
            snapshot.last_seen = datetime.fromisoformat(fields[b"last_seen"].decode())
        if pending is not None:
            snapshot.state, snapshot.last_seen = pending
        return snapshot

    async def flush(self) -> None:
        """Write the pending states, and renew presence when it is due."""
        pending, self._pending = self._pending, {}
        renew = self._renewal_due()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for robot_id, (state, seen_at) in pending.items():
                    pipe.sadd(self.prefix + "robots", robot_id)
                    pipe.hset(
                        self._robot_key(robot_id),
                        mapping={
                            "state": msgspec.json.encode(state),
                            "last_seen": seen_at.isoformat(),
                        },
                    )
                if renew:
                    self._renew_presence(pipe)
                await pipe.execute()
        except BaseException:
            # Keep what was not written, unless a newer state replaced it.
            self._pending = {**pending, **self._pending}
            raise
        if renew:
            self._last_renewal = asyncio.get_running_loop().time()
        if not self.healthy:
            logger.info("live_state_recovered", extra={"robots": len(self._held)})
        self.healthy = True

    def _renewal_due(self) -> bool:
        now = asyncio.get_running_loop().time()
        return (
            now - self._last_renewal >= self.presence_ttl_ms / 3000 or not self.healthy
        )

    def _write_presence(
        self, pipe: redis.client.Pipeline, robot_id: str, node_id: str
    ) -> None:
        pipe.sadd(self.prefix + "robots", robot_id)
        pipe.set(self._presence_key(robot_id), node_id, px=self.presence_ttl_ms)
        pipe.hset(self._robot_key(robot_id), "node_id", node_id)

    def _renew_presence(self, pipe: redis.client.Pipeline) -> None:
        for robot_id, node_id in self._held.items():
            keys = (self._presence_key(robot_id), self._robot_key(robot_id))
            pipe.sadd(self.prefix + "robots", robot_id)
            pipe.eval(_RENEW_PRESENCE, 2, *keys, node_id, self.presence_ttl_ms)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                self._mark_unhealthy("live_flush_failed", exc, None)

    def _mark_unhealthy(self, event: str, exc: Exception, robot_id: str | None) -> None:
        if self.healthy:
            logger.warning(event, extra={"error": str(exc), "robot_id": robot_id})
        self.healthy = False
