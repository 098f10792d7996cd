"""Deliver one event to one webhook: sign, post, retry, and trip the breaker.

Each HTTP attempt runs inside the webhook's circuit breaker (``purgatory``).
After ``breaker_threshold`` failures in a row the breaker opens, and attempts
fail at once with :class:`CircuitOpen` until ``breaker_reset_s`` has passed.
Then one trial request decides whether it closes again. ``tenacity`` retries
failed attempts with exponential back-off and jitter, and an open breaker
ends the retries early.

NOTE: purgatory 3.0 times the cool-down with ``time.time()``, so a wall-clock
step can shorten or stretch it.

The receiver checks ``X-Fleethub-Signature: sha256=<hex>``, the HMAC-SHA256 of
the raw request body keyed with the webhook's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from fleethub.models import utcnow
from fleethub.storage.events_sql import OutboxItem, Webhook

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Fleethub-Signature"
EVENT_ID_HEADER = "X-Fleethub-Event-Id"

RecordAttempt = Callable[[dict[str, Any]], Awaitable[None]]


def sign(secret: str, body: bytes) -> str:
    """Return the signature header value for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class DeliveryFailed(Exception):
    """An attempt that got no 2xx response, so it is retried."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CircuitOpen(Exception):
    """The webhook's breaker is open, so no request was made."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry limits and back-off for one event in one delivery round."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0


class Deliverer:
    """Post outbox items to their webhook with retries and a breaker per webhook."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        policy: RetryPolicy,
        breakers: AsyncCircuitBreakerFactory,
        record: RecordAttempt,
    ) -> None:
        self.client = client
        self.policy = policy
        self.breakers = breakers
        self.record = record

    async def deliver(self, webhook: Webhook, item: OutboxItem) -> None:
        """Deliver ``item``, adding each attempt to ``item.attempts``.

        Raises :class:`DeliveryFailed` when every attempt failed and
        :class:`CircuitOpen` when the breaker stopped the retries.
        """
        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            # Waits initial * 2**n plus up to ``initial`` of jitter, capped at max.
            wait=wait_exponential_jitter(
                multiplier=policy.initial_backoff_s,
                jitter=policy.initial_backoff_s,
                max=policy.max_backoff_s,
            ),
            retry=retry_if_exception_type(DeliveryFailed),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                item.attempts += 1
                await self._attempt(webhook, item, item.attempts)

    async def _attempt(self, webhook: Webhook, item: OutboxItem, number: int) -> None:
        breaker = await self.breakers.get_breaker(webhook.webhook_id)
        started = time.perf_counter()
        try:
            async with breaker:
                status = await self._post(webhook, item)
        except OpenedState:
            await self._record(item, number, "circuit_open", None, None, started)
            raise CircuitOpen(webhook.webhook_id) from None
        except DeliveryFailed as exc:
            error = str(exc)
            await self._record(item, number, "failed", exc.status_code, error, started)
            logger.warning(
                "webhook_attempt_failed",
                extra={
                    "webhook_id": webhook.webhook_id,
                    "event_id": item.event_id,
                    "attempt": number,
                    "error": error,
                },
            )
            raise
        await self._record(item, number, "delivered", status, None, started)

    async def _post(self, webhook: Webhook, item: OutboxItem) -> int:
        body = item.payload.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(webhook.secret, body),
            EVENT_ID_HEADER: item.event_id,
        }
        try:
            response = await self.client.post(
                webhook.url,
                content=body,
                headers=headers,
                timeout=self.policy.timeout_s,
            )
        except httpx.HTTPError as exc:
            message = f"Request failed: {type(exc).__name__}: {exc}"
            raise DeliveryFailed(message) from None
        if not response.is_success:
            message = f"Endpoint returned HTTP {response.status_code}."
            raise DeliveryFailed(message, response.status_code)
        return response.status_code

    async def _record(
        self,
        item: OutboxItem,
        attempt: int,
        outcome: str,
        status_code: int | None,
        error: str | None,
        started: float,
    ) -> None:
        await self.record(
            {
                "webhook_id": item.webhook_id,
                "event_id": item.event_id,
                "attempt": attempt,
                "outcome": outcome,
                "status_code": status_code,
                "error": error,
                "duration_s": time.perf_counter() - started,
                "ts": utcnow(),
            }
        )
