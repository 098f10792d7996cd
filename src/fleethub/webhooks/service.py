"""Webhooks: registration, the durable outbox and one sender task per webhook.

``offer`` only appends the event to a bounded in-memory queue, so ingest
never waits. A writer task stores one outbox row per matching webhook; a
sender task per webhook delivers its rows oldest first and deletes each once
delivered. Rows survive a restart: the senders start by reading the outbox,
so events that were not delivered before a stop are sent when the process
comes back. Until its outbox row is written, an event lives only in memory
and is lost if the process dies. When the database is down the writer keeps
the events queued and retries every ``retry_pause_s``.

A row that still fails after a full retry round stays at the head of its
webhook's outbox and is tried again after ``retry_pause_s`` (or, with an open
breaker, after the cool-down), so delivery order is kept. Rows older than
``max_age_s`` are dropped and recorded as ``expired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec
from purgatory import AsyncCircuitBreakerFactory

from fleethub.errors import FleethubError, NotFound
from fleethub.logs import should_log_repeat
from fleethub.models import Event, utcnow
from fleethub.storage.events_sql import OutboxItem, Webhook, WebhookStore
from fleethub.webhooks.delivery import CircuitOpen, Deliverer, DeliveryFailed

logger = logging.getLogger(__name__)

_OUTBOX_PAGE = 50


@dataclass
class CircuitStatus:
    """The breaker state of one webhook, as the API reports it."""

    state: str = "closed"
    times_opened: int = 0


class _Sender:
    """The delivery task of one webhook."""

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        self.wake = asyncio.Event()
        self.wake.set()
        self.task: asyncio.Task[None] | None = None


class WebhookService:
    """Deliver events to registered webhooks, durably and without blocking."""

    def __init__(
        self,
        store: WebhookStore,
        deliverer: Deliverer,
        breakers: AsyncCircuitBreakerFactory,
        *,
        breaker_reset_s: float,
        retry_pause_s: float,
        max_age_s: float,
        max_queue: int = 10_000,
    ) -> None:
        self.store = store
        self.deliverer = deliverer
        self.breaker_reset_s = breaker_reset_s
        self.retry_pause_s = retry_pause_s
        self.max_age_s = max_age_s
        self.dropped = 0
        self.circuits: dict[str, CircuitStatus] = {}
        self._senders: dict[str, _Sender] = {}
        self._queue: deque[Event] = deque(maxlen=max_queue)
        self._ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        breakers.add_listener(self._on_breaker)

    async def start(self) -> None:
        """Load the webhooks and start the writer and one sender per webhook."""
        for webhook in await self.store.all():
            self._start_sender(webhook)
        self._writer = asyncio.create_task(self._write_loop(), name="webhook-outbox")
        logger.info("webhooks_started", extra={"webhooks": len(self._senders)})

    async def close(self) -> None:
        """Write queued events to the outbox, then stop every task.

        Deliveries in flight are cancelled; their rows stay in the outbox.
        """
        tasks = [sender.task for sender in self._senders.values() if sender.task]
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        try:
            await self._write_queued()
        except FleethubError as exc:
            logger.error(
                "webhook_events_lost",
                extra={"events": len(self._queue), "error": exc.message},
            )
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.deliverer.client.aclose()

    def offer(self, event: Event) -> None:
        """Queue an event for the webhooks without waiting."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if should_log_repeat(self.dropped):
                logger.warning(
                    "webhook_queue_full",
                    extra={"event_id": event.event_id, "dropped": self.dropped},
                )
        self._queue.append(event)
        self._ready.set()

    # Registration, used by the API.

    async def create(
        self,
        url: str,
        event_types: list[str],
        severities: list[str],
        secret: str | None,
    ) -> Webhook:
        """Register a webhook; a missing secret is generated."""
        webhook = Webhook(
            webhook_id=str(uuid.uuid4()),
            url=url,
            event_types=sorted(set(event_types)),
            severities=sorted(set(severities)),
            secret=secret or secrets.token_urlsafe(32),
            created_at=utcnow(),
        )
        await self.store.add(webhook)
        self._start_sender(webhook)
        logger.info("webhook_created", extra={"webhook_id": webhook.webhook_id})
        return webhook

    async def delete(self, webhook_id: str) -> None:
        """Stop delivering to a webhook and drop it with its outbox."""
        sender = self._senders.pop(webhook_id, None)
        self.circuits.pop(webhook_id, None)
        removed = await self.store.remove(webhook_id)
        if sender is None and not removed:
            raise NotFound(
                f"Webhook {webhook_id!r} does not exist.", webhook_id=webhook_id
            )
        if sender is not None and sender.task is not None:
            sender.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender.task
        logger.info("webhook_deleted", extra={"webhook_id": webhook_id})

    def get(self, webhook_id: str) -> Webhook:
        sender = self._senders.get(webhook_id)
        if sender is None:
            raise NotFound(
                f"Webhook {webhook_id!r} does not exist.", webhook_id=webhook_id
            )
        return sender.webhook

    def all(self) -> list[Webhook]:
        return [sender.webhook for sender in self._senders.values()]

    def circuit(self, webhook_id: str) -> CircuitStatus:
        return self.circuits.setdefault(webhook_id, CircuitStatus())

    # Outbox writer.

    async def _write_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self._write_queued()
            except Exception:
                logger.exception("webhook_outbox_write_failed")
                await asyncio.sleep(self.retry_pause_s)
                self._ready.set()

    async def _write_queued(self) -> None:
        events = list(self._queue)
        self._queue.clear()
        rows: list[dict[str, Any]] = []
        woken: set[str] = set()
        for event in events:
            payload = msgspec.json.encode(event).decode()
            for sender in self._senders.values():
                if matches(sender.webhook, event):
                    rows.append(
                        {
                            "webhook_id": sender.webhook.webhook_id,
                            "event_id": event.event_id,
                            "payload": payload,
                        }
                    )
                    woken.add(sender.webhook.webhook_id)
        try:
            await self.store.enqueue(rows)
        except BaseException:
            # Put the events back in order, so a later round writes them.
            self._queue.extendleft(reversed(events))
            raise
        for webhook_id in woken:
            woken_sender = self._senders.get(webhook_id)
            if woken_sender is not None:  # None when deleted during the write
                woken_sender.wake.set()

    # Senders.

    def _start_sender(self, webhook: Webhook) -> None:
        sender = _Sender(webhook)
        sender.task = asyncio.create_task(
            self._send_loop(sender), name=f"webhook-{webhook.webhook_id}"
        )
        self._senders[webhook.webhook_id] = sender

    async def _send_loop(self, sender: _Sender) -> None:
        webhook_id = sender.webhook.webhook_id
        while True:
            await sender.wake.wait()
            sender.wake.clear()
            try:
                pause = await self._send_pending(sender.webhook)
            except Exception:
                logger.exception(
                    "webhook_sender_failed", extra={"webhook_id": webhook_id}
                )
                pause = self.retry_pause_s
            if pause is not None:
                # Back off before the next round; new events wait in the outbox.
                await asyncio.sleep(pause)
                sender.wake.set()

    async def _send_pending(self, webhook: Webhook) -> float | None:
        """Deliver the outbox in order; return how long to pause, or None when empty."""
        while items := await self.store.pending(webhook.webhook_id, _OUTBOX_PAGE):
            for item in items:
                if self._expired(item):
                    await self._expire(item)
                    continue
                try:
                    await self.deliverer.deliver(webhook, item)
                except CircuitOpen:
                    await self.store.set_attempts(item.id, item.attempts)
                    return self.breaker_reset_s
                except DeliveryFailed:
                    await self.store.set_attempts(item.id, item.attempts)
                    return self.retry_pause_s
                await self.store.settle(item.id)
        return None

    def _expired(self, item: OutboxItem) -> bool:
        return (utcnow() - item.created_at).total_seconds() > self.max_age_s

    async def _expire(self, item: OutboxItem) -> None:
        logger.warning(
            "webhook_event_expired",
            extra={"webhook_id": item.webhook_id, "event_id": item.event_id},
        )
        await self.store.record(
            {
                "webhook_id": item.webhook_id,
                "event_id": item.event_id,
                "attempt": item.attempts,
                "outcome": "expired",
                "status_code": None,
                "error": f"Not delivered within {self.max_age_s:g} s.",
                "duration_s": 0.0,
                "ts": utcnow(),
            }
        )
        await self.store.settle(item.id)

    def _on_breaker(self, name: str, kind: str, message: Any) -> None:
        if kind != "state_changed":
            return
        status = self.circuit(name)
        status.state = message.state
        if message.state == "opened":
            status.times_opened += 1
        logger.warning(
            "webhook_circuit_changed",
            extra={"webhook_id": name, "state": message.state},
        )


def matches(webhook: Webhook, event: Event) -> bool:
    """Return True when the webhook wants ``event``; empty filters match all."""
    if webhook.event_types and event.type not in webhook.event_types:
        return False
    return not webhook.severities or event.severity.value in webhook.severities
