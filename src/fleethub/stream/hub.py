"""Fan states and events from the bus out to operator subscribers.

One task reads the bus and offers each message to every subscriber whose
filters match. Messages are the bus's JSON bytes, shared and never copied per
subscriber. Each subscriber has two bounded queues:

- states: when full, the oldest state is dropped and counted; the subscriber
  gets ``{"type": "missed", "states": N}`` before its next message;
- events: never dropped. When this queue is full, or more than
  ``max_missed`` states were dropped since the last ``missed`` notice went
  out, the subscriber is evicted: it gets no more messages and its connection
  is closed.

So a subscriber queues at most ``max_states + max_events`` messages and the
hub accepts at most ``max_subscribers`` subscribers. Publishing never waits
for a subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import msgspec

from fleethub.bus.base import EVENTS, STATES, EventBus, Subscription
from fleethub.errors import Overloaded
from fleethub.protocol import encode
from fleethub.stream.filters import StreamFilters

logger = logging.getLogger(__name__)

# Queue size of the hub's own bus subscription. One task without I/O drains
# it, so it fills only when the event loop is starved.
HUB_BUS_QUEUE = 100_000


class EnvelopeData(msgspec.Struct):
    """The routing fields of an event."""

    type: str | None = None
    robot_id: str | None = None
    severity: str | None = None


class Envelope(msgspec.Struct):
    """The routing fields of a bus message; decoding skips everything else."""

    type: str
    robot_id: str | None = None
    data: EnvelopeData = msgspec.field(default_factory=EnvelopeData)


_ENVELOPE_DECODER = msgspec.json.Decoder(Envelope)


def decode_envelope(message: bytes) -> Envelope:
    """Decode the routing fields of a bus message, or raise msgspec.DecodeError."""
    return _ENVELOPE_DECODER.decode(message)


class Evicted(Exception):
    """Raised to a reader whose subscriber fell behind or whose server is closing."""


class Subscriber:
    """The bounded queues and filters of one operator connection."""

    def __init__(
        self,
        filters: StreamFilters,
        *,
        max_states: int,
        max_events: int,
        max_missed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.filters = filters
        self.max_missed = max_missed
        self.missed_total = 0
        self.peak_length = 0
        self.evicted = asyncio.Event()
        self.eviction_reason: str | None = None
        self._clock = clock
        self._states: deque[tuple[int, bytes]] = deque(maxlen=max_states)
        self._events: deque[tuple[int, bytes]] = deque()
        self._max_events = max_events
        self._unreported = 0
        self._seq = 0
        self._last_state_at: dict[str, float] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._states) + len(self._events)

    def set_filters(self, filters: StreamFilters) -> None:
        self.filters = filters
        self._last_state_at.clear()

    def offer_state(self, robot_id: str | None, message: bytes) -> bool:
        """Queue a state and return False when the subscriber must be evicted."""
        if not self.filters.wants_state(robot_id) or self._rate_limited(robot_id):
            return True
        if len(self._states) == self._states.maxlen:
            self.missed_total += 1
            self._unreported += 1
        self._seq += 1
        self._states.append((self._seq, message))
        self._queued()
        return self._unreported <= self.max_missed

    def offer_event(self, head: Envelope, message: bytes) -> bool:
        """Queue an event and return False when the events queue is full."""
        data = head.data
        if not self.filters.wants_event(data.type, data.robot_id, data.severity):
            return True
        if len(self._events) >= self._max_events:
            return False
        self._seq += 1
        self._events.append((self._seq, message))
        self._queued()
        return True

    def _queued(self) -> None:
        self.peak_length = max(self.peak_length, len(self))
        self._ready.set()

    async def next(self) -> bytes:
        """Wait for the next message: a ``missed`` notice first, then by arrival."""
        while True:
            if self.evicted.is_set():
                raise Evicted(self.eviction_reason)
            if self._unreported:
                count, self._unreported = self._unreported, 0
                return encode({"type": "missed", "states": count})
            if self._states or self._events:
                return self._pop()
            self._ready.clear()
            await self._ready.wait()

    def take_ready(self) -> list[bytes]:
        """Take every queued message without waiting: a ``missed`` notice first."""
        if self.evicted.is_set():
            raise Evicted(self.eviction_reason)
        taken = []
        if self._unreported:
            count, self._unreported = self._unreported, 0
            taken.append(encode({"type": "missed", "states": count}))
        while self._states or self._events:
            taken.append(self._pop())
        return taken

    def _pop(self) -> bytes:
        if not self._events:
            return self._states.popleft()[1]
        if not self._states or self._events[0][0] < self._states[0][0]:
            return self._events.popleft()[1]
        return self._states.popleft()[1]

    def _rate_limited(self, robot_id: str | None) -> bool:
        rate = self.filters.state_rate_hz
        if rate is None or robot_id is None:
            return False
        now = self._clock()
        last = self._last_state_at.get(robot_id)
        if last is not None and now - last < 1.0 / rate:
            return True
        self._last_state_at[robot_id] = now
        return False

    def evict(self, reason: str) -> None:
        self.eviction_reason = reason
        self._states.clear()
        self._events.clear()
        self.evicted.set()
        self._ready.set()


class StreamHub:
    """Own the subscribers of ``/ws/fleet`` and ``/api/stream``."""

    def __init__(
        self,
        bus: EventBus,
        *,
        max_subscribers: int = 1000,
        max_states: int = 256,
        max_events: int = 1024,
        max_missed: int = 2048,
    ) -> None:
        self.bus = bus
        self.max_subscribers = max_subscribers
        self.max_states = max_states
        self.max_events = max_events
        self.max_missed = max_missed
        self.evictions = 0
        self.subscribers: set[Subscriber] = set()
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._subscription = self.bus.subscribe(
            frozenset({STATES, EVENTS}), maxsize=HUB_BUS_QUEUE
        )
        self._task = asyncio.create_task(self._fan_out(), name="stream-hub")

    async def close(self) -> None:
        """Stop fanning out and evict every subscriber."""
        if self._subscription is not None:
            self.bus.unsubscribe(self._subscription)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriber in list(self.subscribers):
            self._evict(subscriber, "server_closing")

    def connect(self, filters: StreamFilters) -> Subscriber:
        """Add a subscriber, or raise :class:`Overloaded` when the hub is full."""
        if len(self.subscribers) >= self.max_subscribers:
            raise Overloaded(
                f"The stream already has its maximum of {self.max_subscribers} "
                "subscribers; try again later.",
                code="too_many_subscribers",
            )
        subscriber = Subscriber(
            filters,
            max_states=self.max_states,
            max_events=self.max_events,
            max_missed=self.max_missed,
        )
        self.subscribers.add(subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def _fan_out(self) -> None:
        assert self._subscription is not None
        while True:
            first = await self._subscription.get()
            for channel, message in [first, *self._subscription.drain()]:
                self._deliver(channel, message)

    def _deliver(self, channel: str, message: bytes) -> None:
        try:
            head = decode_envelope(message)
        except msgspec.DecodeError:
            logger.warning("stream_message_invalid", extra={"channel": channel})
            return
        for subscriber in list(self.subscribers):
            if channel == STATES:
                still_subscribed = subscriber.offer_state(head.robot_id, message)
            else:
                still_subscribed = subscriber.offer_event(head, message)
            if not still_subscribed:
                self._evict(subscriber, "too_slow")

    def _evict(self, subscriber: Subscriber, reason: str) -> None:
        self.subscribers.discard(subscriber)
        subscriber.evict(reason)
        self.evictions += 1
        logger.warning(
            "stream_subscriber_evicted",
            extra={"reason": reason, "missed_states": subscriber.missed_total},
        )
