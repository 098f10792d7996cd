"""Storage on SQLAlchemy's async engine: SQLite (WAL) and PostgreSQL.

One implementation serves both dialects. The few places where SQL differs
(epoch arithmetic, bulk insert) branch on the dialect name here rather than
leaking into the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, event, func, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import Executable

from fleethub.errors import StorageUnavailable
from fleethub.models import Analytics, Event, StoredEvent, TelemetryRow
from fleethub.storage.bulk import SqliteTelemetryWriter, insert_telemetry_sqlite
from fleethub.storage.rollups import HourlyRollups
from fleethub.storage.schema import events, robots, telemetry

logger = logging.getLogger(__name__)


def _utc(value: datetime | None) -> datetime | None:
    """Normalise to aware UTC; SQLite hands back naive values stored as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(
    url: str, *, pool_size: int = 10, pool_timeout_s: float = 10.0
) -> AsyncEngine:
    """Build an async engine with the per-dialect settings fleethub relies on."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, pool_timeout=pool_timeout_s, pool_pre_ping=True
    )


def _sqlite_file_writer(engine: AsyncEngine) -> SqliteTelemetryWriter | None:
    """Return a dedicated telemetry writer when the engine is on a SQLite file.

    An in-memory database, or a URL with driver options (``?mode=...``), is
    left to the engine: a second connection would not see the same database,
    or not open it the same way.
    """
    url = engine.url
    if engine.dialect.name != "sqlite" or url.query:
        return None
    if url.database in (None, "", ":memory:"):
        return None
    return SqliteTelemetryWriter(url.database)


class SqlStorage:
    """:class:`fleethub.storage.base.Storage` over a SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.rollups = HourlyRollups(self._connect, self.dialect)
        self._rollup_task: asyncio.Task[None] | None = None
        self._sqlite_writer = _sqlite_file_writer(engine)

    def start_rollups(self, max_gap_s: float) -> None:
        """Start rolling up every robot's final hours in the background."""
        self._rollup_task = asyncio.create_task(
            self.rollups.run(self.robot_ids, max_gap_s), name="analytics-rollups"
        )

    async def close(self) -> None:
        if self._rollup_task is not None:
            self._rollup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rollup_task
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """Open a connection (in a transaction when writing), translating outages."""
        try:
            if write:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self.engine.connect() as conn:
                    yield conn
        except (OperationalError, PoolTimeout, OSError) as exc:
            raise StorageUnavailable(f"Database unavailable: {exc}") from exc
        except DBAPIError as exc:
            # Without a statement the error came from opening the connection (a
            # database that refuses connections), not from a query.
            if exc.connection_invalidated or exc.statement is None:
                raise StorageUnavailable(f"Database connection lost: {exc}") from exc
            raise

    async def fetch(self, query: Executable) -> Sequence[Row[Any]]:
        """Run a read-only query built elsewhere (robot health) and return its rows."""
        async with self._connect() as conn:
            return (await conn.execute(query)).all()

    async def ping(self) -> None:
        async with self._connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def ensure_robot(self, robot_id: str, seen_at: datetime) -> None:
        async with self._connect(write=True) as conn:
            updated = await conn.execute(
                robots.update()
                .where(robots.c.robot_id == robot_id)
                .values(last_seen_at=seen_at)
            )
            if updated.rowcount == 0:
                await conn.execute(
                    insert(robots).values(
                        robot_id=robot_id, created_at=seen_at, last_seen_at=seen_at
                    )
                )

    async def robot_ids(self) -> list[str]:
        async with self._connect() as conn:
            result = await conn.execute(
                select(robots.c.robot_id).order_by(robots.c.robot_id)
            )
            return list(result.scalars())

    async def write_telemetry(self, rows: Sequence[TelemetryRow]) -> None:
        if not rows:
            return
        if self._sqlite_writer is not None:
            await self._sqlite_writer.write(rows)
            return
        async with self._connect(write=True) as conn:
            if self.dialect == "sqlite":
                await insert_telemetry_sqlite(conn, rows)
            else:
                await conn.execute(insert(telemetry), [row._asdict() for row in rows])

    async def last_telemetry_time(self, robot_id: str) -> datetime | None:
        async with self._connect() as conn:
            result = await conn.execute(
                select(func.max(telemetry.c.ts)).where(telemetry.c.robot_id == robot_id)
            )
            return _utc(result.scalar())

    async def latest_telemetry(self, robot_id: str) -> TelemetryRow | None:
        """Return the robot's newest stored row, found through the (robot, ts) index."""
        query = (
            select(telemetry)
            .where(telemetry.c.robot_id == robot_id)
            .order_by(telemetry.c.ts.desc())
            .limit(1)
        )
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _telemetry_row(row)

    async def telemetry(
        self,
        robot_id: str,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: datetime | None = None,
    ) -> list[TelemetryRow]:
        query = select(telemetry).where(telemetry.c.robot_id == robot_id)
        if start is not None:
            query = query.where(telemetry.c.ts >= _utc(start))
        if end is not None:
            query = query.where(telemetry.c.ts < _utc(end))
        if after is not None:
            query = query.where(telemetry.c.ts > _utc(after))
        query = query.order_by(telemetry.c.ts).limit(limit)
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_telemetry_row(row) for row in result]

    async def count_telemetry(self, robot_id: str | None = None) -> int:
        query = select(func.count()).select_from(telemetry)
        if robot_id is not None:
            query = query.where(telemetry.c.robot_id == robot_id)
        async with self._connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def analytics(
        self,
        robot_id: str,
        start: datetime | None,
        end: datetime | None,
        max_gap_s: float,
    ) -> Analytics:
        """Aggregate from hourly rollups, see :mod:`fleethub.storage.rollups`."""
        return await self.rollups.analytics(robot_id, start, end, max_gap_s)

    async def write_events(self, items: Sequence[Event]) -> None:
        if not items:
            return
        values = [
            {
                "event_id": item.event_id,
                "type": item.type,
                "robot_id": item.robot_id,
                "severity": item.severity.value,
                "ts": item.timestamp.astimezone(UTC),
                "data": item.data,
            }
            for item in items
        ]
        async with self._connect(write=True) as conn:
            await conn.execute(insert(events), values)

    async def events(
        self,
        *,
        robot_id: str | None = None,
        event_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[StoredEvent]:
        query = select(events)
        if robot_id is not None:
            query = query.where(events.c.robot_id == robot_id)
        if event_type is not None:
            query = query.where(events.c.type == event_type)
        if start is not None:
            query = query.where(events.c.ts >= _utc(start))
        if end is not None:
            query = query.where(events.c.ts < _utc(end))
        if before_id is not None:
            query = query.where(events.c.id < before_id)
        query = query.order_by(events.c.id.desc()).limit(limit)
        async with self._connect() as conn:
            result = await conn.execute(query)
            return [_stored_event(row) for row in result]

    async def event_counts(self) -> dict[str, int]:
        query = select(events.c.type, func.count()).group_by(events.c.type)
        async with self._connect() as conn:
            result = await conn.execute(query)
            return {event_type: int(count) for event_type, count in result}


def _telemetry_row(row: Row[Any]) -> TelemetryRow:
    values = row._mapping
    return TelemetryRow(**{**values, "ts": _utc(values["ts"])})


def _stored_event(row: Row[Any]) -> StoredEvent:
    values = row._mapping
    return StoredEvent(
        id=values["id"],
        event_id=values["event_id"],
        type=values["type"],
        robot_id=values["robot_id"],
        severity=values["severity"],
        timestamp=_utc(values["ts"]),
        data=values["data"],
    )
