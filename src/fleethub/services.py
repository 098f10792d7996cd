"""The composition root: build every part from the settings, and close them.

The core never imports a concrete backend; this module is the one place that
chooses SQLite or PostgreSQL, memory or Redis.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.backends import (
    cache_reads,
    create_engine_for,
    open_bus,
    open_live_state,
    open_storage,
)
from fleethub.bus.base import EventBus
from fleethub.commands.lifecycle import LifecycleRunner
from fleethub.commands.service import CommandService
from fleethub.errors import FleethubError
from fleethub.event_services import build_rule_engine, start_event_services
from fleethub.ingest.pipeline import IngestPipeline
from fleethub.ingest.writer import BatchWriter
from fleethub.live.base import LiveState
from fleethub.logs import log_context
from fleethub.missions.service import MissionService
from fleethub.models import Event, TelemetryRow
from fleethub.observability.metrics import FleetMetrics
from fleethub.observability.runtime import Observability, start_observability
from fleethub.rules.service import RuleService
from fleethub.security.service import SecurityService
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.commands import SqlCommandStore
from fleethub.storage.lock import DatabaseLock, lock_database
from fleethub.storage.missions import SqlMissionStore
from fleethub.storage.sql import SqlStorage
from fleethub.stream.hub import StreamHub
from fleethub.transports.registry import LinkRegistry
from fleethub.transports.routing import BusRouter
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
    commands: CommandService
    security: SecurityService
    missions: MissionService
    lifecycle: LifecycleRunner
    router: BusRouter
    rules: RuleService
    stream: StreamHub
    webhooks: WebhookService
    metrics: FleetMetrics = field(default_factory=FleetMetrics)
    observability: Observability | None = None
    database_lock: DatabaseLock | None = None

    async def close(self) -> None:
        """Flush the writers, then close the backends in reverse build order."""
        if self.observability is not None:
            await self.observability.close()
        await self.lifecycle.stop()
        await self.missions.stop()
        await self.router.close()
        await self.rules.close()
        await self.webhooks.close()
        await self.stream.close()
        await self.telemetry_writer.close()
        await self.event_writer.close()
        await self.security.close()
        await self.bus.close()
        await self.live.close()
        await self.storage.close()
        if self.database_lock is not None:
            self.database_lock.release()
        logger.info("services_closed", extra={"node_id": self.node_id})


async def build_services(
    settings: Settings, *, migrate_schema: bool = False
) -> Services:
    """Build and start every part; raise :class:`SchemaOutOfDate` if needed.

    On a SQLite file this first takes the serving lock, and raises
    :class:`~fleethub.storage.lock.DatabaseInUse` when another server holds it.
    """
    database_lock = lock_database(settings.database_url)
    try:
        engine = create_engine_for(settings)
    except BaseException:
        if database_lock is not None:
            database_lock.release()
        raise
    try:
        await _check_schema(engine, settings, migrate_schema)
        node_id = uuid.uuid4().hex[:12]
        storage = cache_reads(await open_storage(settings, engine), settings)
        live = open_live_state(settings)
        bus = await open_bus(settings, node_id)
    except BaseException:
        await engine.dispose()
        if database_lock is not None:
            database_lock.release()
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
        settings,
        storage,
        live,
        bus,
        telemetry_writer,
        event_writer,
        build_rule_engine(settings),
    )
    links = LinkRegistry()
    router = BusRouter(links, bus=bus, live=live, node_id=node_id)
    lifecycle = _build_lifecycle(settings, storage, live, bus, pipeline, router)
    commands = lifecycle["commands"]
    rules, stream, webhooks = await start_event_services(
        settings, storage, bus, pipeline, commands, metrics
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
        rules=rules,
        stream=stream,
        webhooks=webhooks,
        metrics=metrics,
        database_lock=database_lock,
        **lifecycle,
        security=SecurityService(settings, storage.engine),
    )
    services.router.start()
    with log_context(component="telemetry_writer"):
        telemetry_writer.start()
    with log_context(component="event_writer"):
        event_writer.start()
    await services.missions.start()
    services.lifecycle.start()
    pipeline.event_listeners.append(metrics.observe_lifecycle_event)
    services.observability = start_observability(services)
    logger.info("services_started", extra={"node_id": services.node_id})
    return services


async def _check_schema(
    engine: AsyncEngine, settings: Settings, migrate_schema: bool
) -> None:
    if migrate_schema:
        await migrate.upgrade(engine)
    elif not await migrate.is_up_to_date(engine):
        raise SchemaOutOfDate(
            "The database schema is not at the version this fleethub needs; "
            "run 'fleethub migrate' first.",
            database_url=_redact(settings.database_url),
        )


def _build_lifecycle(
    settings: Settings,
    storage: SqlStorage,
    live: LiveState,
    bus: EventBus,
    pipeline: IngestPipeline,
    router: BusRouter,
) -> dict[str, Any]:
    """Build the command and mission services and the task that drives their timers."""
    commands = CommandService(
        SqlCommandStore(storage),
        router,
        pipeline.emit,
        settings,
        clock=pipeline.clock,
    )
    missions = MissionService(
        SqlMissionStore(storage),
        commands,
        live,
        pipeline.emit,
        settings,
        clock=pipeline.clock,
    )
    commands.observers.append(missions.observe_command)
    pipeline.state_observers.append(missions.observe_state)
    lifecycle = LifecycleRunner(
        bus,
        sweeps=[commands.sweep, missions.sweep],
        connect_hooks=[commands.deliver_pending, missions.robot_connected],
        interval_s=settings.lifecycle_sweep_interval_s,
        clock=pipeline.clock,
    )
    return {
        "commands": commands,
        "missions": missions,
        "lifecycle": lifecycle,
        "router": router,
    }


def _redact(url: str) -> str:
    """Hide the password in a database URL before it reaches a message or log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
