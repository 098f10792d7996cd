"""The event bus between fleethub processes, on Redis pub/sub.

Why pub/sub and not streams: the bus promises at-most-once, best-effort
delivery (see :class:`~fleethub.bus.base.EventBus`), and every durable fact
(telemetry, events, commands) is stored in the database before it is
published. Streams would add what the bus does not need (a stored log,
consumer groups, trimming) and a write to Redis memory for every robot
state. Pub/sub forwards each message to the connected processes and
keeps no copy, which is the same contract the in-process bus gives.

How it works:

- Each process holds one pub/sub connection with a pattern subscription to
  every channel under the key prefix, and fans messages out to its local
  :class:`~fleethub.bus.base.Subscription` objects exactly like
  :class:`~fleethub.bus.memory.MemoryBus`. Subscribing is therefore local
  and immediate, and never needs a round-trip to Redis.
- A message published here is delivered to local subscribers at once and
  queued for Redis; a sender task publishes the queue in pipelined batches,
  so a publisher never waits on the network. Each message carries the
  sender's node id, so a process skips its own messages when Redis echoes
  them back.
- When the connection drops (Redis restarts), the reader reconnects with
  back-off and subscribes again; local subscriptions stay open the whole
  time. Messages published during the outage are lost, as the contract
  allows. The outbound queue is bounded and drops its oldest messages,
  counted in ``dropped_outbound``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import redis.asyncio as redis
from redis.exceptions import RedisError

from fleethub.bus.base import Subscription
from fleethub.bus.memory import MemoryBus

logger = logging.getLogger(__name__)

MAX_OUTBOUND = 10_000
PUBLISH_BATCH = 500
MIN_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
SEPARATOR = b"\n"


class RedisBus:
    """:class:`~fleethub.bus.base.EventBus` shared by every process on one Redis."""

    def __init__(self, url: str, prefix: str, node_id: str) -> None:
        self.prefix = f"{prefix}bus:"
        self.node_id = node_id
        self.reconnects = 0
        self.dropped_outbound = 0
        self._origin = node_id.encode() + SEPARATOR
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0
        )
        self._local = MemoryBus()
        self._outbound: deque[tuple[str, bytes]] = deque(maxlen=MAX_OUTBOUND)
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._sent = asyncio.Event()  # set while the outbound queue is empty
        self._sent.set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is subscribed right now."""
        return self._subscribed.is_set()

    async def start(self, timeout_s: float = 5.0) -> None:
        """Start the reader and sender tasks and wait for the first subscription.

        Raises :class:`TimeoutError` when Redis is not reachable in time.
        """
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="redis-bus-reader"),
            asyncio.create_task(self._send_forever(), name="redis-bus-sender"),
        ]
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise

    async def close(self, timeout_s: float = 2.0) -> None:
        """Publish what is still queued (waiting up to ``timeout_s``), then stop."""
        if self._tasks and self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent.wait(), timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._local.close()
        await self._client.aclose()

    async def publish(self, channel: str, message: bytes) -> None:
        await self._local.publish(channel, message)
        if len(self._outbound) == self._outbound.maxlen:
            self.dropped_outbound += 1
        self._outbound.append((channel, message))
        self._sent.clear()
        self._wake.set()

    def wants(self, channel: str) -> bool:
        # Subscribers in other processes are invisible from here.
        return True

    def subscribe(self, channels: frozenset[str], maxsize: int = 1000) -> Subscription:
        return self._local.subscribe(channels, maxsize)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._local.unsubscribe(subscription)

    async def _send_forever(self) -> None:
        delay = MIN_BACKOFF_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbound:
                try:
                    await self._send_batch()
                    delay = MIN_BACKOFF_S
                except (RedisError, OSError) as exc:
                    logger.warning(
                        "bus_publish_failed",
                        extra={"error": str(exc), "queued": len(self._outbound)},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF_S)
            self._sent.set()

    async def _send_batch(self) -> None:
        """Publish the oldest queued messages; put them back first if that fails."""
        count = min(PUBLISH_BATCH, len(self._outbound))
        batch = [self._outbound.popleft() for _ in range(count)]
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, message in batch:
                    pipe.publish(self.prefix + channel, self._origin + message)
                await pipe.execute()
        except BaseException:
            # Messages queued meanwhile may have filled the queue: then the
            # oldest of the batch are dropped, like any overflow.
            dropped = max(0, len(batch) - (MAX_OUTBOUND - len(self._outbound)))
            self.dropped_outbound += dropped
            self._outbound.extendleft(reversed(batch[dropped:]))
            raise

    async def _read_forever(self) -> None:
        delay = MIN_BACKOFF_S
        while True:
            try:
                await self._read_until_disconnected()
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    delay = MIN_BACKOFF_S
                self._subscribed.clear()
                logger.warning(
                    "bus_disconnected", extra={"error": str(exc), "retry_in_s": delay}
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
            self.reconnects += 1

    async def _read_until_disconnected(self) -> None:
        async with self._client.pubsub() as pubsub:
            await pubsub.psubscribe(self.prefix + "*")
            await self._wait_for_confirmation(pubsub)
            self._subscribed.set()
            logger.info("bus_subscribed", extra={"node_id": self.node_id})
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
                if message is not None:
                    await self._deliver(message["channel"], message["data"])

    async def _wait_for_confirmation(self, pubsub: redis.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "psubscribe":
                return

    async def _deliver(self, raw_channel: bytes, data: bytes) -> None:
        origin, _, message = data.partition(SEPARATOR)
        if origin + SEPARATOR == self._origin:
            return
        channel = raw_channel.decode().removeprefix(self.prefix)
        await self._local.publish(channel, message)
