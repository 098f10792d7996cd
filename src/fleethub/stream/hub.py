"""Fan states and events from the bus out to operator subscribers.

One task reads the bus and appends each message to a shared broadcast log,
so publishing a message costs the same with one subscriber or a thousand.
Messages are the bus's JSON bytes, shared and never copied per subscriber.
The log keeps the last ``max_states`` states and, separately, the last
``max_events`` events. Each subscriber keeps only a cursor into it, and its
filters are applied when it reads, not when a message is published.

Senders wait on the hub's tick: one shared event, set at most every
``tick_s`` after new messages arrived, so a burst of messages wakes each
sender once. Senders that batch wait on a shared clock for their interval
instead, aligned to multiples of it, so they all read the same range.
Subscribers with the same filters reading the same range share one built
:class:`Payload`, so a thousand unfiltered dashboards cost one join per tick.
A subscriber whose connection can take pre-built frames (see
:meth:`StreamHub.push_to`) has no sender task at all: on each tick the hub
writes the shared frames to every such connection itself.

Falling behind:

- states: a subscriber whose cursor is behind the oldest state still in the
  log gets ``{"type": "missed", "states": N}`` before its next messages. N
  counts every state published that left the log before the subscriber read
  it, whatever the subscriber's filters (with ``robot_ids`` filters it is an
  upper bound of what it would have received).
- events: never dropped. A subscriber that has not read an event it wants by
  the time that event leaves the log, or whose unreported missed states
  exceed ``max_missed``, is evicted: it gets no more messages and its
  connection is closed.

So the hub keeps at most ``max_states + max_events`` messages whatever the
number of subscribers, and at most ``max_subscribers`` subscribers.
Publishing never waits for a subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import msgspec

from fleethub.bus.base import EVENTS, STATES, EventBus, Subscription
from fleethub.errors import Overloaded
from fleethub.protocol import encode
from fleethub.stream.filters import SEVERITY_RANK, StreamFilters
from fleethub.transports.raw_frames import text_frame

logger = logging.getLogger(__name__)

# Queue size of the hub's own bus subscription. One task without I/O drains
# it, so it fills only when the event loop is starved.
HUB_BUS_QUEUE = 100_000

# A subscriber written to directly gets nothing more while this many bytes
# wait unsent in its socket. Meanwhile it falls behind the log like any slow
# reader. The value is the same as the transport's default high-water mark, where plain
# ASGI sends start to wait.
MAX_UNSENT_BYTES = 64 * 1024

# Minimum interval between the hub's checks for subscribers that missed too
# many states. Eviction is a bound on memory and wasted work, not a deadline.
SWEEP_INTERVAL_S = 0.05


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


class FrameWriter(Protocol):
    """Writes pre-built WebSocket frames to one connection without waiting."""

    def write(self, frames: bytes, max_buffered: int) -> bool:
        """Write, or return False when ``max_buffered`` bytes wait unsent.

        Raises ConnectionError once the connection is closing.
        """


class Evicted(Exception):
    """Raised to a reader whose subscriber fell behind or whose server is closing."""


class StateEntry(NamedTuple):
    seq: int
    robot_id: str | None
    at: float
    message: bytes


class EventEntry(NamedTuple):
    seq: int
    head: Envelope
    message: bytes


class Position(NamedTuple):
    """A place in the log: how many states and events had been appended."""

    states: int
    events: int


class BroadcastLog:
    """The last ``max_states`` states and ``max_events`` events, in order.

    States and events are numbered from 0 in their own sequence, and every
    message also gets a sequence number shared by both, which orders a read.
    The lists are trimmed in chunks, so an append is amortised O(1).
    """

    def __init__(self, max_states: int, max_events: int) -> None:
        self.max_states = max_states
        self.max_events = max_events
        self.seq = 0
        self._states: list[StateEntry] = []
        self._states_base = 0
        self.states_appended = 0
        self._events: list[EventEntry] = []
        self._events_base = 0
        self.events_appended = 0

    @property
    def end(self) -> Position:
        return Position(self.states_appended, self.events_appended)

    @property
    def first_state(self) -> int:
        """Number of the oldest state still in the log."""
        return max(self._states_base, self.states_appended - self.max_states)

    @property
    def first_event(self) -> int:
        """Number of the oldest event still in the log."""
        return max(self._events_base, self.events_appended - self.max_events)

    def append_state(self, robot_id: str | None, at: float, message: bytes) -> None:
        self.seq += 1
        self._states.append(StateEntry(self.seq, robot_id, at, message))
        self.states_appended += 1
        if len(self._states) >= 2 * self.max_states:
            drop = len(self._states) - self.max_states
            del self._states[:drop]
            self._states_base += drop

    def append_event(self, head: Envelope, message: bytes) -> EventEntry | None:
        """Append an event; return the event that left the log, if one did."""
        self.seq += 1
        self._events.append(EventEntry(self.seq, head, message))
        self.events_appended += 1
        dropped_number = self.events_appended - self.max_events - 1
        dropped = None
        if dropped_number >= self._events_base:
            dropped = self._events[dropped_number - self._events_base]
        if len(self._events) >= 2 * self.max_events:
            drop = len(self._events) - self.max_events
            del self._events[:drop]
            self._events_base += drop
        return dropped

    def states(self, start: int, stop: int) -> list[StateEntry]:
        """States numbered ``start`` (clamped to the oldest kept) up to ``stop``."""
        start = max(start, self.first_state)
        if start >= stop:
            return []
        return self._states[start - self._states_base : stop - self._states_base]

    def events(self, start: int, stop: int) -> list[EventEntry]:
        start = max(start, self.first_event)
        if start >= stop:
            return []
        return self._events[start - self._events_base : stop - self._events_base]


class Payload:
    """Messages of one read, shared by subscribers that read the same range.

    ``messages`` contains the ``missed`` notice, if any, then the messages in
    log order. The batch frame is built once, on first use.
    """

    __slots__ = ("messages", "_batch", "_frames", "_batch_frame")

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self._batch: bytes | None = None
        self._frames: bytes | None = None
        self._batch_frame: bytes | None = None

    @property
    def batch(self) -> bytes:
        """``{"type": "batch", "items": [...]}`` of every message."""
        if self._batch is None:
            self._batch = (
                b'{"type":"batch","items":[' + b",".join(self.messages) + b"]}"
            )
        return self._batch

    @property
    def frames(self) -> bytes:
        """Every message as its own WebSocket text frame, back to back."""
        if self._frames is None:
            self._frames = b"".join([text_frame(message) for message in self.messages])
        return self._frames

    @property
    def batch_frame(self) -> bytes:
        """The batch as one WebSocket text frame."""
        if self._batch_frame is None:
            self._batch_frame = text_frame(self.batch)
        return self._batch_frame


class Read(NamedTuple):
    """A read not yet committed: the payload and where the cursor moves to."""

    payload: Payload
    end: Position
    missed: int


class Tick:
    """One wake-up shared by every sender waiting for it.

    ``end`` is the log's end when it fired, so the senders it wakes read the
    same range and can share payloads even if more messages arrive meanwhile.
    """

    __slots__ = ("event", "end")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.end = Position(0, 0)

    def fire(self, end: Position) -> None:
        self.end = end
        self.event.set()


class Subscriber:
    """The cursor and filters of one operator connection."""

    def __init__(self, filters: StreamFilters, position: Position) -> None:
        self.state_cursor = position.states
        self.event_cursor = position.events
        self.missed_total = 0
        self.peak_length = 0
        self.evicted = asyncio.Event()
        self.eviction_reason: str | None = None
        self.pending = 0
        self.writer: FrameWriter | None = None
        self._last_state_kept: dict[str, StateEntry] = {}
        self.set_filters(filters)

    def set_filters(self, filters: StreamFilters) -> None:
        self.filters = filters
        self.robot_ids = frozenset(filters.robot_ids)
        self.min_rank = SEVERITY_RANK[filters.min_severity]
        # Subscribers with equal keys read equal payloads from the same range.
        # A state rate limit depends on what this subscriber was sent before,
        # so those subscribers build their own.
        self.share_key: tuple[object, ...] | None = (
            None
            if filters.state_rate_hz is not None
            else (
                self.robot_ids,
                frozenset(filters.event_types),
                self.min_rank,
                filters.states,
                filters.events,
            )
        )
        self._last_state_kept.clear()

    def __len__(self) -> int:
        """Messages logged since this subscriber's cursor, before filtering."""
        return self.pending

    def wants_event(self, head: Envelope) -> bool:
        filters = self.filters
        if not filters.events:
            return False
        data = head.data
        if self.robot_ids and data.robot_id not in self.robot_ids:
            return False
        if filters.event_types and data.type not in filters.event_types:
            return False
        rank = SEVERITY_RANK.get(data.severity or "info", 0)  # type: ignore[call-overload]
        return rank >= self.min_rank

    def select_states(self, entries: list[StateEntry]) -> list[StateEntry]:
        if not self.filters.states:
            return []
        if self.robot_ids:
            wanted = self.robot_ids
            entries = [entry for entry in entries if entry.robot_id in wanted]
        rate = self.filters.state_rate_hz
        if rate is None:
            return entries
        interval = 1.0 / rate
        last_kept = self._last_state_kept
        kept = []
        for entry in entries:
            robot_id = entry.robot_id
            if robot_id is not None:
                last = last_kept.get(robot_id)
                # A read whose write was refused is read again: the state kept
                # then must be kept again, not dropped as too close to itself.
                if (
                    last is not None
                    and last.seq != entry.seq
                    and entry.at - last.at < interval
                ):
                    continue
                last_kept[robot_id] = entry
            kept.append(entry)
        return kept

    def evict(self, reason: str) -> None:
        self.eviction_reason = reason
        self.pending = 0
        self.evicted.set()


class StreamHub:
    """Own the subscribers of ``/ws/fleet`` and ``/api/stream``."""

    def __init__(
        self,
        bus: EventBus,
        *,
        max_subscribers: int = 1000,
        max_states: int = 2048,
        max_events: int = 1024,
        max_missed: int = 2048,
        tick_s: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.max_subscribers = max_subscribers
        self.max_missed = max_missed
        self.tick_s = tick_s
        self.evictions = 0
        self.subscribers: set[Subscriber] = set()
        self.log = BroadcastLog(max_states, max_events)
        self.payloads_built = 0
        self._clock = clock
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._appending = False
        self._resubscribe_pending = False
        self._state_subscribers = 0
        self._cache: dict[tuple[object, ...], Read] = {}
        self._tick = Tick()
        self._tick_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._last_tick = -math.inf
        self._last_sweep = -math.inf
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._clocks: dict[int, Tick] = {}
        # Subscribers the hub writes to itself, by batch interval (0: none).
        self._pushed: dict[int, set[Subscriber]] = {}
        self._push_clocks: dict[int, asyncio.TimerHandle] = {}

    @property
    def max_states(self) -> int:
        return self.log.max_states

    @property
    def max_events(self) -> int:
        return self.log.max_events

    def start(self) -> None:
        self._started = True
        self._resubscribe()
        self._task = asyncio.create_task(self._fan_out(), name="stream-hub")

    async def close(self) -> None:
        """Stop fanning out and evict every subscriber."""
        self._started = False
        if self._subscription is not None:
            self.bus.unsubscribe(self._subscription)
            self._subscription = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for handle in (self._tick_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        for handle in self._push_clocks.values():
            handle.cancel()
        self._push_clocks.clear()
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
        # Count first: a swap of the bus subscription logs what was queued
        # before this subscriber came, which it must not see.
        self._count_states(filters, +1)
        subscriber = Subscriber(filters, self.log.end)
        self.subscribers.add(subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        self._unpush(subscriber)
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            self._count_states(subscriber.filters, -1)

    def set_filters(self, subscriber: Subscriber, filters: StreamFilters) -> None:
        """Replace a subscriber's filters; its cursor stays where it is."""
        if subscriber in self.subscribers:
            self._count_states(subscriber.filters, -1)
            self._count_states(filters, +1)
        writer = self._unpush(subscriber)
        subscriber.set_filters(filters)
        if writer is not None:
            self.push_to(subscriber, writer)

    def push_to(self, subscriber: Subscriber, writer: FrameWriter) -> None:
        """Have the hub write the subscriber's frames itself, on its ticks.

        No task waits per subscriber then: on each tick (or batch interval)
        the hub reads for every such subscriber, mostly from the shared
        payload cache, and writes the frames in one call. A refused write
        leaves the cursor where it is; the subscriber is retried on the next
        tick and falls behind like any slow reader.
        """
        if subscriber not in self.subscribers:
            return
        subscriber.writer = writer
        interval = subscriber.filters.batch_ms
        self._pushed.setdefault(interval, set()).add(subscriber)
        if self._behind(subscriber, self.log.end):
            self._schedule_push(interval)

    def _unpush(self, subscriber: Subscriber) -> FrameWriter | None:
        writer, subscriber.writer = subscriber.writer, None
        if writer is not None:
            group = self._pushed.get(subscriber.filters.batch_ms)
            if group is not None:
                group.discard(subscriber)
        return writer

    def _count_states(self, filters: StreamFilters, change: int) -> None:
        """Subscribe to the bus's states only while some subscriber wants them."""
        before = self._state_subscribers > 0
        self._state_subscribers += change if filters.states else 0
        if (self._state_subscribers > 0) != before and self._started:
            if self._appending:
                # Swapping now would log the old queue's rest before the
                # messages being appended; do it once they are in.
                self._resubscribe_pending = True
            else:
                self._resubscribe()

    def _resubscribe(self) -> None:
        """Swap the bus subscription for one with or without the states channel.

        The old subscription's queued messages are logged first, and nothing
        here awaits, so no message is lost or seen twice in the swap.
        """
        old = self._subscription
        if old is not None:
            self._append_all(old.drain())
            self.bus.unsubscribe(old)
        channels = {EVENTS, STATES} if self._state_subscribers else {EVENTS}
        self._subscription = self.bus.subscribe(
            frozenset(channels), maxsize=HUB_BUS_QUEUE
        )

    async def _fan_out(self) -> None:
        while True:
            subscription = self._subscription
            assert subscription is not None
            try:
                first = await subscription.get()
            except asyncio.CancelledError:
                # A swapped subscription is closed, which ends its get().
                if subscription is not self._subscription and subscription.closed:
                    task = asyncio.current_task()
                    if task is None or not task.cancelling():
                        continue
                raise
            self._append_all([first, *subscription.drain()])

    def _append_all(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            return
        at = self._clock()
        self._appending = True
        try:
            self._append_each(messages, at)
        finally:
            self._appending = False
        self._cache.clear()
        self._schedule_tick()
        for interval, group in self._pushed.items():
            if interval and group:
                self._schedule_push(interval)
        if self._resubscribe_pending:
            self._resubscribe_pending = False
            self._resubscribe()

    def _append_each(self, messages: list[tuple[str, bytes]], at: float) -> None:
        log = self.log
        for channel, message in messages:
            try:
                head = decode_envelope(message)
            except msgspec.DecodeError:
                logger.warning("stream_message_invalid", extra={"channel": channel})
                continue
            if channel == STATES:
                log.append_state(head.robot_id, at, message)
            else:
                dropped = log.append_event(head, message)
                if dropped is not None:
                    self._evict_behind(dropped)

    def _evict_behind(self, dropped: EventEntry) -> None:
        """Evict subscribers that wanted an event that just left the log."""
        number = self.log.first_event - 1
        for subscriber in list(self.subscribers):
            if subscriber.event_cursor <= number and subscriber.wants_event(
                dropped.head
            ):
                self._evict(subscriber, "too_slow")

    # Ticks -------------------------------------------------------------

    def _schedule_tick(self) -> None:
        if self._tick_handle is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._last_tick + self.tick_s - loop.time()
        if delay <= 0:
            self._tick_handle = loop.call_soon(self._fire_tick)
        else:
            self._tick_handle = loop.call_later(delay, self._fire_tick)

    def _fire_tick(self) -> None:
        self._tick_handle = None
        loop = asyncio.get_running_loop()
        self._last_tick = loop.time()
        tick, self._tick = self._tick, Tick()
        end = self.log.end
        tick.fire(end)
        group = self._pushed.get(0)
        if group:
            self._push(0, group, end)
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        """Sweep now, or once SWEEP_INTERVAL_S has passed since the last sweep."""
        if self._sweep_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_sweep + SWEEP_INTERVAL_S - loop.time()
        if wait <= 0:
            self._sweep()
        else:
            self._sweep_handle = loop.call_later(wait, self._sweep)

    def _sweep(self) -> None:
        """Evict subscribers whose unreported missed states exceed max_missed."""
        self._sweep_handle = None
        self._last_sweep = asyncio.get_running_loop().time()
        log = self.log
        limit = log.first_state - self.max_missed
        states_end, events_end = log.end
        kept_states = states_end - log.first_state
        kept_events = events_end - log.first_event
        for subscriber in list(self.subscribers):
            pending = min(states_end - subscriber.state_cursor, kept_states) + min(
                events_end - subscriber.event_cursor, kept_events
            )
            subscriber.pending = pending
            if pending > subscriber.peak_length:
                subscriber.peak_length = pending
            if subscriber.state_cursor < limit:
                subscriber.missed_total += log.first_state - subscriber.state_cursor
                self._evict(subscriber, "too_slow")

    def _behind(self, subscriber: Subscriber, end: Position) -> bool:
        return subscriber.state_cursor < end.states or (
            subscriber.event_cursor < end.events
        )

    async def wait(self, subscriber: Subscriber) -> Position:
        """Wait until the log has messages past the subscriber's cursor.

        Returns the log's end as of the tick that woke it (or now, without
        waiting); raises :class:`Evicted` once the subscriber is evicted.
        """
        while True:
            if subscriber.evicted.is_set():
                raise Evicted(subscriber.eviction_reason)
            end = self.log.end
            if self._behind(subscriber, end):
                return end
            tick = self._tick
            await tick.event.wait()
            if self._behind(subscriber, tick.end):
                return tick.end

    async def clock(self, interval_ms: int) -> Position:
        """Wait for the next multiple of ``interval_ms`` on the loop's clock.

        Every sender with the same interval wakes on the same tick and gets
        the same log end, which lets them share payloads.
        """
        tick = self._clocks.get(interval_ms)
        if tick is None:
            tick = self._clocks[interval_ms] = Tick()
            loop = asyncio.get_running_loop()
            interval = interval_ms / 1000
            deadline = (math.floor(loop.time() / interval) + 1) * interval
            loop.call_at(deadline, self._fire_clock, interval_ms, tick)
        await tick.event.wait()
        return tick.end

    def _fire_clock(self, interval_ms: int, tick: Tick) -> None:
        if self._clocks.get(interval_ms) is tick:
            del self._clocks[interval_ms]
        tick.fire(self.log.end)

    def _schedule_push(self, interval_ms: int) -> None:
        """Make sure the pushed subscribers of ``interval_ms`` get written soon."""
        if not interval_ms:
            self._schedule_tick()
            return
        if interval_ms in self._push_clocks:
            return
        loop = asyncio.get_running_loop()
        interval = interval_ms / 1000
        deadline = (math.floor(loop.time() / interval) + 1) * interval
        self._push_clocks[interval_ms] = loop.call_at(
            deadline, self._fire_push_clock, interval_ms
        )

    def _fire_push_clock(self, interval_ms: int) -> None:
        del self._push_clocks[interval_ms]
        group = self._pushed.get(interval_ms)
        if group:
            self._push(interval_ms, group, self.log.end)

    def _push(self, interval_ms: int, group: set[Subscriber], end: Position) -> None:
        """Write what is new to every subscriber of one group, without waiting."""
        batch = interval_ms > 0
        refused = False
        for subscriber in list(group):
            writer = subscriber.writer
            if writer is None:
                continue
            try:
                read = self.read(subscriber, end)
            except Evicted:
                continue
            if read is None:
                continue
            messages = read.payload.messages
            if messages:
                frames = read.payload.batch_frame if batch else read.payload.frames
                try:
                    written = writer.write(frames, MAX_UNSENT_BYTES)
                except ConnectionError:
                    self._unpush(subscriber)
                    continue
                if not written:
                    refused = True
                    continue
            self.commit(subscriber, read)
        if refused:
            # Try the slow ones again later even if nothing new arrives.
            self._schedule_push(interval_ms)

    # Reading -----------------------------------------------------------

    def read(self, subscriber: Subscriber, end: Position | None = None) -> Read | None:
        """Build what the subscriber gets up to ``end`` (default: the log's end).

        Returns None when nothing is new. The cursor moves only on
        :meth:`commit`, so a sender that cannot write the payload now keeps
        its place and falls behind like any slow reader.
        """
        if subscriber.evicted.is_set():
            raise Evicted(subscriber.eviction_reason)
        log = self.log
        if end is None:
            end = log.end
        if not self._behind(subscriber, end):
            return None
        state_cursor = subscriber.state_cursor
        event_cursor = subscriber.event_cursor
        if event_cursor < log.first_event and any(
            subscriber.wants_event(entry.head)
            for entry in log.events(event_cursor, log.first_event)
        ):
            self._evict(subscriber, "too_slow")
            raise Evicted(subscriber.eviction_reason)
        key = subscriber.share_key
        if key is not None:
            key = (key, state_cursor, event_cursor, end)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        missed = max(0, log.first_state - state_cursor)
        states = subscriber.select_states(log.states(state_cursor, end.states))
        events = [
            entry
            for entry in log.events(event_cursor, end.events)
            if subscriber.wants_event(entry.head)
        ]
        if events and states:
            merged = sorted([*states, *events], key=_seq)
            messages = [entry.message for entry in merged]
        else:
            messages = [entry.message for entry in states or events]
        if missed:
            messages.insert(0, encode({"type": "missed", "states": missed}))
        self.payloads_built += 1
        read = Read(Payload(messages), end, missed)
        if key is not None:
            self._cache[key] = read
        return read

    def commit(self, subscriber: Subscriber, read: Read) -> None:
        """Move the cursor past a read that was sent."""
        subscriber.state_cursor = max(subscriber.state_cursor, read.end.states)
        subscriber.event_cursor = max(subscriber.event_cursor, read.end.events)
        subscriber.missed_total += read.missed
        subscriber.pending = 0

    def _evict(self, subscriber: Subscriber, reason: str) -> None:
        self.disconnect(subscriber)
        subscriber.evict(reason)
        self.evictions += 1
        logger.warning(
            "stream_subscriber_evicted",
            extra={"reason": reason, "missed_states": subscriber.missed_total},
        )


def _seq(entry: StateEntry | EventEntry) -> int:
    return entry.seq
