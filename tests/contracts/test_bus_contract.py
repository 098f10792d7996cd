"""The event-bus contract, in memory and on Redis."""

from __future__ import annotations

import asyncio

import pytest

from fleethub.bus.base import EVENTS, STATES, EventBus
from fleethub.bus.redis import RedisBus


async def test_delivers_to_channel_subscribers(bus: EventBus) -> None:
    """A message reaches every subscriber of its channel, in order."""
    first = bus.subscribe(frozenset({STATES}))
    second = bus.subscribe(frozenset({STATES, EVENTS}))
    await bus.publish(STATES, b'{"n":1}')
    await bus.publish(STATES, b'{"n":2}')
    for subscription in (first, second):
        assert await asyncio.wait_for(subscription.get(), 5) == (STATES, b'{"n":1}')
        assert await asyncio.wait_for(subscription.get(), 5) == (STATES, b'{"n":2}')


async def test_other_channels_not_delivered(bus: EventBus) -> None:
    """A subscriber gets nothing published on channels it did not subscribe to."""
    events = bus.subscribe(frozenset({EVENTS}))
    await bus.publish(STATES, b"{}")
    await bus.publish(EVENTS, b'{"e":1}')
    assert await asyncio.wait_for(events.get(), 5) == (EVENTS, b'{"e":1}')
    assert len(events) == 0


async def test_unsubscribe_closes(bus: EventBus) -> None:
    """After unsubscribing, get() raises instead of waiting forever."""
    subscription = bus.subscribe(frozenset({STATES}))
    bus.unsubscribe(subscription)
    await bus.publish(STATES, b"{}")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(subscription.get(), 5)


async def test_full_inbox_drops_oldest(bus: EventBus) -> None:
    """A subscriber that falls behind loses its oldest messages, counted."""
    subscription = bus.subscribe(frozenset({STATES}), maxsize=2)
    for n in range(5):
        await bus.publish(STATES, str(n).encode())
    assert subscription.drain() == [(STATES, b"3"), (STATES, b"4")]
    assert subscription.dropped == 3


async def test_close_closes_subscriptions(bus: EventBus) -> None:
    """Closing the bus ends every subscription."""
    subscription = bus.subscribe(frozenset({EVENTS}))
    await bus.close()
    assert subscription.closed


async def test_wants_subscribed_channel(bus: EventBus) -> None:
    """A bus wants messages on a channel while a subscription covers it."""
    subscription = bus.subscribe(frozenset({STATES, EVENTS}))
    assert bus.wants(STATES)
    assert bus.wants(EVENTS)
    bus.unsubscribe(subscription)


async def test_wants_without_subscribers(bus: EventBus) -> None:
    """Without local subscribers only a networked bus still wants messages.

    The memory bus sees every subscriber, so it returns False. The Redis bus
    cannot see subscribers in other processes, so it always returns True.
    """
    networked = isinstance(bus, RedisBus)
    assert bus.wants(STATES) is networked
    subscription = bus.subscribe(frozenset({EVENTS}))
    assert bus.wants(STATES) is networked
    bus.unsubscribe(subscription)
    assert bus.wants(EVENTS) is networked
