"""The composition root: build every part from the settings, and close them.

The core never imports a concrete backend; this module is the one place that
chooses SQLite or PostgreSQL, memory or Redis.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.backends import (
    cache_reads,
    create_engine_for,
    open_bus,
    open_live_state,
    open_storage,
)
from fleethub.bus.base import EventBus
from fleethub.errors import FleethubError
from fleethub.event_services import build_rule_engine, start_event_services
from fleethub.ingest.pipeline import IngestPipeline
from fleethub.ingest.writer import BatchWriter
from fleethub.live.base import LiveState
from fleethub.logs import log_context
from fleethub.models import Event, TelemetryRow
from fleethub.observability.metrics import FleetMetrics
from fleethub.observability.runtime import Observability, start_observability
from fleethub.rules.service import RuleService
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.sql import SqlStorage
from fleethub.stream.hub import StreamHub
from fleethub.transports.registry import LinkRegistry
from fleethub.transports.routing import RoutedCommandService
from fleethub.webhooks.service import WebhookService

logger = logging.getLogger(__name__)


class SchemaOutOfDate(FleethubError):
    """The database schema is older than this version of fleethub."""

    code = "schema_out_of_date"


@dataclass
class Services:
    """Every long-lived part of one fleethub process."""

    settings: Settings
    node_id: str
    storage: SqlStorage
    live: LiveState
    bus: EventBus
    telemetry_writer: BatchWriter[TelemetryRow]
    event_writer: BatchWriter[Event]
    pipeline: IngestPipeline
    links: LinkRegistry
    commands: RoutedCommandService
    rules: RuleService
    stream: StreamHub
    webhooks: WebhookService
    metrics: FleetMetrics = field(default_factory=FleetMetrics)
    observability: Observability | None = None

    async def close(self) -> None:
        """Flush the writers, then close the backends in reverse build order."""
        if self.observability is not None:
            await self.observability.close()
        await self.commands.close()
        await self.rules.close()
        await self.webhooks.close()
        await self.stream.close()
        await self.telemetry_writer.close()
        await self.event_writer.close()
        await self.bus.close()
        await self.live.close()
        await self.storage.close()
        logger.info("services_closed", extra={"node_id": self.node_id})


async def build_services(settings: Settings, *, migrate_schema: bool = False) -> Services:
    """Build and start every part; raise :class:`SchemaOutOfDate` if needed."""
    engine = create_engine_for(settings)
    try:
        await _check_schema(engine, settings, migrate_schema)
        node_id = uuid.uuid4().hex[:12]
        storage = cache_reads(await open_storage(settings, engine), settings)
        live = open_live_state(settings)
        bus = await open_bus(settings, node_id)
    except BaseException:
        await engine.dispose()
        raise
    metrics = FleetMetrics()
    telemetry_writer = BatchWriter(
        "telemetry",
        storage.write_telemetry,
        batch_size=settings.writer_batch_size,
        flush_interval_s=settings.writer_flush_interval_s,
        max_buffer=settings.writer_max_buffer,
        on_flush=metrics.flush_observer("telemetry"),
    )
    event_writer = BatchWriter(
        "events",
        storage.write_events,
        batch_size=500,
        flush_interval_s=0.2,
        max_buffer=settings.writer_max_buffer,
        on_flush=metrics.flush_observer("events"),
    )
    pipeline = IngestPipeline(
        settings, storage, live, bus, telemetry_writer, event_writer,
        build_rule_engine(settings),
    )
    links = LinkRegistry()
    commands = RoutedCommandService(
        links, pipeline.emit, bus=bus, live=live, node_id=node_id
    )
    rules, stream, webhooks = await start_event_services(
        settings, storage, bus, pipeline, commands
    )
    services = Services(
        settings=settings,
        node_id=node_id,
        storage=storage,
        live=live,
        bus=bus,
        telemetry_writer=telemetry_writer,
        event_writer=event_writer,
        pipeline=pipeline,
        links=links,
        commands=commands,
        rules=rules,
        stream=stream,
        webhooks=webhooks,
        metrics=metrics,
    )
    services.commands.start()
    with log_context(component="telemetry_writer"):
        telemetry_writer.start()
    with log_context(component="event_writer"):
        event_writer.start()
    services.observability = start_observability(services)
    logger.info("services_started", extra={"node_id": services.node_id})
    return services


async def _check_schema(engine: AsyncEngine, settings: Settings, migrate_schema: bool) -> None:
    if migrate_schema:
        await migrate.upgrade(engine)
    elif not await migrate.is_up_to_date(engine):
        raise SchemaOutOfDate(
            "The database schema is not at the version this fleethub needs; "
            "run 'fleethub migrate' first.",
            database_url=_redact(settings.database_url),
        )


def _redact(url: str) -> str:
    """Hide the password in a database URL before it reaches a message or log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
