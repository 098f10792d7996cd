"""Storage on SQLAlchemy's async engine: SQLite (WAL) and PostgreSQL.

One implementation serves both dialects. The few places where SQL differs
(epoch arithmetic, bulk insert) branch on the dialect name here rather than
leaking into the core.
"""

from __future__ import annotations

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
from fleethub.storage.schema import events, robots, telemetry

logger = logging.getLogger(__name__)

# One pass over the robot's rows in time order: window functions pair each
# sample with the previous one, the outer query aggregates. The two dialects
# differ only in time arithmetic and in how the step length is computed.
_ANALYTICS_SQLITE = """
WITH s AS (
    SELECT
        ts, linear, battery, status,
        x - lag(x) OVER w AS dx,
        y - lag(y) OVER w AS dy,
        (julianday(ts) - julianday(lag(ts) OVER w)) * 86400.0 AS dt,
        lag(status) OVER w AS prev_status
    FROM telemetry
    WHERE robot_id = :robot_id AND ts >= :start AND ts < :end
    WINDOW w AS (ORDER BY ts)
)
SELECT
    count(*) AS samples,
    coalesce(sum(sqrt(dx * dx + dy * dy)), 0.0) AS distance_m,
    avg(abs(linear)) AS avg_linear_velocity_mps,
    coalesce(sum(CASE WHEN dt <= :max_gap_s THEN dt ELSE 0 END), 0.0) / 3600.0
        AS operating_hours,
    coalesce(sum(CASE WHEN status = 'charging'
        AND (prev_status IS NULL OR prev_status <> 'charging')
        THEN 1 ELSE 0 END), 0) AS charging_cycles,
    avg(battery) AS avg_battery,
    min(ts) AS first_sample_at,
    max(ts) AS last_sample_at
FROM s
"""

# On PostgreSQL the step is the distance between two points (one window
# function instead of two, and the distance in C), and intervals are summed
# before one conversion to seconds: about a third faster over a million rows.
_ANALYTICS_POSTGRESQL = """
WITH s AS (
    SELECT
        ts, linear, battery, status,
        point(x, y) <-> lag(point(x, y)) OVER w AS step,
        ts - lag(ts) OVER w AS dt,
        lag(status) OVER w AS prev_status
    FROM telemetry
    WHERE robot_id = :robot_id AND ts >= :start AND ts < :end
    WINDOW w AS (ORDER BY ts)
)
SELECT
    count(*) AS samples,
    coalesce(sum(step), 0.0) AS distance_m,
    avg(abs(linear)) AS avg_linear_velocity_mps,
    extract(epoch FROM coalesce(
        sum(dt) FILTER (WHERE dt <= make_interval(secs => :max_gap_s)),
        interval '0'
    )) / 3600.0 AS operating_hours,
    count(*) FILTER (
        WHERE status = 'charging' AND prev_status IS DISTINCT FROM 'charging'
    ) AS charging_cycles,
    avg(battery) AS avg_battery,
    min(ts) AS first_sample_at,
    max(ts) AS last_sample_at
FROM s
"""

_ANALYTICS_SQL = {"sqlite": _ANALYTICS_SQLITE, "postgresql": _ANALYTICS_POSTGRESQL}

# Far enough out that an open-ended range covers everything, close enough that
# every driver can bind it.
_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)


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
        self._analytics_sql = text(_ANALYTICS_SQL[self.dialect])
        self._sqlite_writer = _sqlite_file_writer(engine)

    async def close(self) -> None:
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
        sql = self._analytics_sql
        params = {
            "robot_id": robot_id,
            "start": _utc(start) or _MIN_TIME,
            "end": _utc(end) or _MAX_TIME,
            "max_gap_s": max_gap_s,
        }
        async with self._connect() as conn:
            row = (await conn.execute(sql, params)).mappings().one()
        return Analytics(
            robot_id=robot_id,
            start=start,
            end=end,
            samples=int(row["samples"]),
            distance_m=float(row["distance_m"]),
            avg_linear_velocity_mps=_float_or_none(row["avg_linear_velocity_mps"]),
            operating_hours=float(row["operating_hours"]),
            charging_cycles=int(row["charging_cycles"]),
            avg_battery=_float_or_none(row["avg_battery"]),
            first_sample_at=_parse_time(row["first_sample_at"]),
            last_sample_at=_parse_time(row["last_sample_at"]),
        )

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


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _parse_time(value: Any) -> datetime | None:
    """Read a timestamp from an aggregate, which SQLite returns as text."""
    if value is None or isinstance(value, datetime):
        return _utc(value)
    return _utc(datetime.fromisoformat(str(value)))


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
