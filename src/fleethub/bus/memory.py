"""The in-process event bus."""

from __future__ import annotations

from fleethub.bus.base import Subscription


class MemoryBus:
    """:class:`fleethub.bus.base.EventBus` within one process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self._dropped_by_closed = 0

    async def close(self) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()
        self._subscribers.clear()

    async def publish(self, channel: str, message: bytes) -> None:
        for subscription in self._subscribers.get(channel, ()):
            subscription.deliver(channel, message)

    def wants(self, channel: str) -> bool:
        # unsubscribe() leaves empty sets behind, hence the truth test.
        return bool(self._subscribers.get(channel))

    def subscribe(self, channels: frozenset[str], maxsize: int = 1000) -> Subscription:
        subscription = Subscription(channels, maxsize)
        for channel in channels:
            self._subscribers.setdefault(channel, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribed = False
        for channel in subscription.channels:
            subscribers = self._subscribers.get(channel, set())
            subscribed = subscribed or subscription in subscribers
            subscribers.discard(subscription)
        if subscribed:
            self._dropped_by_closed += subscription.dropped
        subscription.close()

    def subscriptions(self) -> set[Subscription]:
        """Return every open subscription (for metrics)."""
        return set().union(*self._subscribers.values())

    def dropped_total(self) -> int:
        """Return messages dropped for slow subscribers since the bus started."""
        live = sum(subscription.dropped for subscription in self.subscriptions())
        return self._dropped_by_closed + live
