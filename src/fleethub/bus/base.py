"""The event-bus interface.

Messages are JSON bytes, encoded once by the publisher, so a state fanned out
to a thousand subscribers is serialised once and a networked bus can forward
the same bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

# Channels every part agrees on.
STATES = "states"
EVENTS = "events"


class Subscription:
    """A bounded inbox of one subscriber.

    When the inbox is full the oldest message is dropped and counted in
    ``dropped``: a publisher never waits for a subscriber.
    """

    def __init__(self, channels: frozenset[str], maxsize: int) -> None:
        self.channels = channels
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False
        self._messages: deque[tuple[str, bytes]] = deque()
        self._ready = asyncio.Event()

    def deliver(self, channel: str, message: bytes) -> None:
        """Queue a message without waiting; called by the bus."""
        if len(self._messages) >= self.maxsize:
            self._messages.popleft()
            self.dropped += 1
        self._messages.append((channel, message))
        self._ready.set()

    async def get(self) -> tuple[str, bytes]:
        """Wait for the next ``(channel, message)``; raise when closed."""
        while not self._messages:
            if self.closed:
                raise asyncio.CancelledError("subscription closed")
            self._ready.clear()
            await self._ready.wait()
        return self._messages.popleft()

    def drain(self) -> list[tuple[str, bytes]]:
        """Take every queued message at once."""
        items = list(self._messages)
        self._messages.clear()
        return items

    def __len__(self) -> int:
        return len(self._messages)

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class EventBus(Protocol):
    """Publish/subscribe between the parts of fleethub.

    Delivery is at most once and best effort: a subscriber that falls behind
    loses its oldest messages. Telemetry and events are also handed to the
    batched writers, so a dropped message can be read back once its batch is
    stored (within the writer's flush interval, not before publication).
    """

    async def close(self) -> None:
        """Close every subscription and release connections."""

    async def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to every subscriber of ``channel``."""

    def wants(self, channel: str) -> bool:
        """Return whether a message published on ``channel`` may reach anyone.

        False means no subscriber anywhere would get it, so a publisher may
        skip encoding the message at all. A bus that cannot tell, because other
        processes may be listening, returns True.
        """

    def subscribe(self, channels: frozenset[str], maxsize: int = 1000) -> Subscription:
        """Return a new subscription to ``channels``."""

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription`` and close it."""
