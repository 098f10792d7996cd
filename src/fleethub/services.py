"""The composition root: build every part from the settings, and close them.

The core never imports a concrete backend; this module is the one place that
chooses SQLite or PostgreSQL, memory or Redis.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from fleethub.bus.base import EventBus
from fleethub.bus.memory import MemoryBus
from fleethub.commands.service import CommandService
from fleethub.errors import FleethubError
from fleethub.ingest.pipeline import IngestPipeline
from fleethub.ingest.writer import BatchWriter
from fleethub.live.base import LiveState
from fleethub.live.memory import MemoryLiveState
from fleethub.models import Event, TelemetryRow
from fleethub.rules.builtin import RuleEngine, builtin_rules
from fleethub.security.service import SecurityService
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.sql import SqlStorage, create_engine
from fleethub.transports.registry import LinkRegistry

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

    async def close(self) -> None:
        """Flush the writers, then close the backends in reverse build order."""
        await self.telemetry_writer.close()
        await self.event_writer.close()
        await self.security.close()
        await self.bus.close()
        await self.live.close()
        await self.storage.close()
        logger.info("services_closed", extra={"node_id": self.node_id})


async def build_services(settings: Settings, *, migrate_schema: bool = False) -> Services:
    """Build and start every part; raise :class:`SchemaOutOfDate` if needed."""
    engine = create_engine(settings.database_url)
    if migrate_schema:
        await migrate.upgrade(engine)
    elif not await migrate.is_up_to_date(engine):
        await engine.dispose()
        raise SchemaOutOfDate(
            "The database schema is not at the version this fleethub needs; "
            "run 'fleethub migrate' first.",
            database_url=_redact(settings.database_url),
        )
    storage = SqlStorage(engine)
    live = MemoryLiveState()
    bus = MemoryBus()
    telemetry_writer = BatchWriter(
        "telemetry",
        storage.write_telemetry,
        batch_size=settings.writer_batch_size,
        flush_interval_s=settings.writer_flush_interval_s,
        max_buffer=settings.writer_max_buffer,
    )
    event_writer = BatchWriter(
        "events",
        storage.write_events,
        batch_size=500,
        flush_interval_s=0.2,
        max_buffer=settings.writer_max_buffer,
    )
    pipeline = IngestPipeline(
        settings, storage, live, bus, telemetry_writer, event_writer,
        RuleEngine(builtin_rules(settings)),
    )
    links = LinkRegistry()
    services = Services(
        settings=settings,
        node_id=uuid.uuid4().hex[:12],
        storage=storage,
        live=live,
        bus=bus,
        telemetry_writer=telemetry_writer,
        event_writer=event_writer,
        pipeline=pipeline,
        links=links,
        commands=CommandService(links, pipeline.emit),
        security=SecurityService(settings, storage.engine),
    )
    telemetry_writer.start()
    event_writer.start()
    logger.info("services_started", extra={"node_id": services.node_id})
    return services


def _redact(url: str) -> str:
    """Hide the password in a database URL before it reaches a message or log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
