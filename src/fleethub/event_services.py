"""Build the rule service, the operator stream hub and the webhooks.

Kept apart from :mod:`fleethub.services` so the composition root only adds a
few lines; the start and close order lives here.
"""

from __future__ import annotations

from typing import Any

import httpx
from purgatory import AsyncCircuitBreakerFactory

from fleethub.bus.base import EventBus
from fleethub.ingest.pipeline import IngestPipeline
from fleethub.observability.metrics import FleetMetrics
from fleethub.rules.engine import RuleEngine
from fleethub.rules.loader import load_rules
from fleethub.rules.service import CommandSender, RuleService
from fleethub.settings import Settings
from fleethub.storage.events_sql import AlertStore, RuleStore, WebhookStore
from fleethub.storage.sql import SqlStorage
from fleethub.stream.hub import StreamHub
from fleethub.webhooks.delivery import Deliverer, RetryPolicy
from fleethub.webhooks.service import WebhookService


def build_rule_engine(settings: Settings) -> RuleEngine:
    """Build the engine from the rules file; stored edits are applied on start."""
    return RuleEngine(load_rules(settings.rules_file, settings.offline_after_s))


def build_webhooks(
    settings: Settings, storage: SqlStorage, metrics: FleetMetrics | None = None
) -> WebhookService:
    store = WebhookStore(storage.engine)

    async def record(delivery: dict[str, Any]) -> None:
        await store.record(delivery)
        if metrics is not None:
            metrics.observe_webhook_attempt(
                delivery["outcome"], delivery["status_code"]
            )

    breakers = AsyncCircuitBreakerFactory(
        default_threshold=settings.webhook_breaker_threshold,
        default_ttl=settings.webhook_breaker_reset_s,
    )
    policy = RetryPolicy(
        max_attempts=settings.webhook_max_attempts,
        initial_backoff_s=settings.webhook_backoff_initial_s,
        max_backoff_s=settings.webhook_backoff_max_s,
        timeout_s=settings.webhook_timeout_s,
    )
    client = httpx.AsyncClient(follow_redirects=False)
    return WebhookService(
        store,
        Deliverer(client, policy, breakers, record),
        breakers,
        breaker_reset_s=settings.webhook_breaker_reset_s,
        retry_pause_s=settings.webhook_retry_pause_s,
        max_age_s=settings.webhook_max_age_s,
    )


def build_stream(settings: Settings, bus: EventBus) -> StreamHub:
    return StreamHub(
        bus,
        max_subscribers=settings.stream_max_subscribers,
        max_states=settings.stream_state_queue,
        max_events=settings.stream_event_queue,
        max_missed=settings.stream_max_missed,
        tick_s=settings.stream_tick_ms / 1000,
    )


async def start_event_services(
    settings: Settings,
    storage: SqlStorage,
    bus: EventBus,
    pipeline: IngestPipeline,
    commands: CommandSender,
    metrics: FleetMetrics | None = None,
) -> tuple[RuleService, StreamHub, WebhookService]:
    """Build and start the rules, the stream hub and the webhooks, in that order."""
    stream = build_stream(settings, bus)
    webhooks = build_webhooks(settings, storage, metrics)
    rules = RuleService(
        pipeline.rules,
        RuleStore(storage.engine),
        AlertStore(storage.engine),
        emit=pipeline.emit,
        commands=commands,
        sink=webhooks,
        tick_interval_s=settings.rules_tick_interval_s,
    )
    pipeline.event_listeners.append(rules.offer)
    stream.start()
    await webhooks.start()
    await rules.start()
    return rules, stream, webhooks
