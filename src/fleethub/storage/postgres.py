"""Storage on PostgreSQL: COPY ingest, daily telemetry partitions, a bounded pool.

:class:`PostgresStorage` is :class:`~fleethub.storage.sql.SqlStorage` with
three PostgreSQL-only additions:

- ``write_telemetry`` streams each batch with COPY (asyncpg's binary
  ``copy_records_to_table``), several times faster than a multi-row INSERT,
  on a connection of its own outside the pool (:class:`CopyConnection`).
- The ``telemetry`` table (partitioned by range of ``ts`` with a DEFAULT
  partition, see migration 0001) gets one partition per UTC day, created
  ahead of time by :meth:`PostgresStorage.ensure_partitions`. Retention drops
  whole days with :meth:`PostgresStorage.drop_partitions_before`.
- The connection pool has a fixed size and a checkout timeout; when every
  connection stays busy past the timeout the call raises
  :class:`~fleethub.errors.StorageUnavailable` instead of waiting forever.
  The COPY connection counts against the same per-process budget, so the
  pool gets one connection fewer (:func:`pool_size_for`).

Partition maintenance takes a transaction-level advisory lock, so several
fleethub processes on one database never run it at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fleethub.errors import StorageUnavailable
from fleethub.models import TelemetryRow
from fleethub.storage.rollups import delete_rollups_before
from fleethub.storage.sql import SqlStorage

logger = logging.getLogger(__name__)

TELEMETRY_COLUMNS = TelemetryRow._fields
_encode_json = msgspec.json.Encoder().encode
PARTITION_PREFIX = "telemetry_p"

# Any constant works as long as every fleethub process uses the same one.
MAINTENANCE_LOCK_ID = 0x666C6565  # "flee"
MAINTENANCE_RETRY_S = 60.0

# Seconds to wait for the COPY connection to open before the batch is retried.
COPY_CONNECT_TIMEOUT_S = 10.0

# asyncpg errors that mean the server or the connection is gone, as opposed
# to a row the database rejects.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def has_copy_connection(connection_budget: int) -> bool:
    """Return True when a budget of connections leaves one for COPY of its own.

    With a budget of 1 the telemetry writer borrows the pool's only connection
    for each batch instead, as every request does.
    """
    return connection_budget >= 2


def pool_size_for(connection_budget: int) -> int:
    """Return the pool size that keeps pool plus COPY connection within budget."""
    if has_copy_connection(connection_budget):
        return connection_budget - 1
    return connection_budget


def create_postgres_engine(
    url: str, *, pool_size: int, pool_timeout_s: float
) -> AsyncEngine:
    """Build an engine whose pool never grows past ``pool_size`` connections.

    Pass :func:`pool_size_for` of the per-process budget, so the telemetry
    writer's COPY connection fits in it too.
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
    )


def partition_name(day: date) -> str:
    """Return the name of the partition that contains ``day`` (UTC)."""
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _encode_row(row: TelemetryRow) -> tuple[object, ...]:
    """Turn a row into COPY values, with ``lidar_ranges`` as text for its json column.

    msgspec encodes a 180-beam scan about 3x faster than the standard json
    module, which matters because encoding is most of a batch's CPU time.
    """
    lidar = row.lidar_ranges
    return (*row[:-1], None if lidar is None else _encode_json(lidar).decode())


class CopyConnection:
    """One asyncpg connection, outside the pool, that telemetry COPY reuses.

    A connection from the pool costs three extra round trips per batch (the
    pre-ping's BEGIN, query and ROLLBACK), and under load each round trip
    waits for a turn of the busy event loop. This connection stays open
    between batches, so a batch costs only the two round trips of COPY.

    When the connection fails, :meth:`copy` drops it and raises
    :class:`~fleethub.errors.StorageUnavailable`. The next call opens a new
    one. The caller (the telemetry writer) supplies the retry and back-off.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        args, options = engine.dialect.create_connect_args(engine.url)
        # Options that SQLAlchemy's asyncpg adapter reads itself; asyncpg's
        # connect() rejects them.
        for key in (
            "async_creator_fn",
            "prepared_statement_cache_size",
            "prepared_statement_name_func",
        ):
            options.pop(key, None)
        self._connect_args = args
        self._connect_options = options
        self._connection: asyncpg.Connection | None = None
        # asyncpg rejects a second operation while one runs on a connection.
        self._lock = asyncio.Lock()
        self.connections_opened = 0

    @property
    def connected(self) -> bool:
        """True while a connection is open, as far as asyncpg has noticed."""
        return self._connection is not None and not self._connection.is_closed()

    async def copy(self, table: str, records: Iterable[tuple[object, ...]]) -> None:
        """Copy ``records`` into ``table``: all of them or none."""
        async with self._lock:
            connection = await self._open()
            try:
                await connection.copy_records_to_table(
                    table, records=records, columns=TELEMETRY_COLUMNS
                )
            except _CONNECTION_ERRORS as exc:
                self._drop(connection)
                logger.warning("copy_connection_lost", extra={"error": str(exc)})
                raise StorageUnavailable(f"Database connection lost: {exc}") from exc

    async def _open(self) -> asyncpg.Connection:
        connection = self._connection
        if connection is not None and not connection.is_closed():
            return connection
        try:
            connection = await asyncpg.connect(
                *self._connect_args,
                timeout=COPY_CONNECT_TIMEOUT_S,
                **self._connect_options,
            )
        except Exception as exc:
            # The writer rejects a batch's rows for any error other than
            # StorageUnavailable. So every failure to connect, a wrong
            # password included, becomes one, and the batch waits for a retry.
            raise StorageUnavailable(f"Database unavailable: {exc}") from exc
        self._connection = connection
        self.connections_opened += 1
        if self.connections_opened > 1:
            logger.info(
                "copy_connection_reopened",
                extra={"connections_opened": self.connections_opened},
            )
        return connection

    def _drop(self, connection: asyncpg.Connection) -> None:
        if self._connection is connection:
            self._connection = None
        connection.terminate()

    async def close(self) -> None:
        """Close the connection, if one is open."""
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is None or connection.is_closed():
                return
            try:
                await connection.close(timeout=COPY_CONNECT_TIMEOUT_S)
            except (*_CONNECTION_ERRORS, TimeoutError):
                connection.terminate()


class PostgresStorage(SqlStorage):
    """:class:`~fleethub.storage.base.Storage` tuned for PostgreSQL.

    With ``copy_connection`` set, telemetry COPY runs on a
    :class:`CopyConnection` of its own. Otherwise each batch borrows a
    connection from the pool.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_timeout_s: float,
        copy_connection: bool = False,
    ) -> None:
        super().__init__(engine)
        self.pool_timeout_s = pool_timeout_s
        self.copy_connection = CopyConnection(engine) if copy_connection else None
        self._maintenance: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self.copy_connection is not None:
            await self.copy_connection.close()
        await super().close()

    @contextlib.asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """Open a connection like the base class, with a clearer pool-timeout error."""
        try:
            async with super()._connect(write=write) as conn:
                yield conn
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                raise self._pool_exhausted() from exc.__cause__
            raise

    def _pool_exhausted(self) -> StorageUnavailable:
        size = self.engine.pool.size()  # type: ignore[attr-defined]
        return StorageUnavailable(
            f"All {size} database connections stayed busy for "
            f"{self.pool_timeout_s:g} s; raise FLEETHUB_DATABASE_POOL_SIZE or "
            "reduce the load.",
            code="database_pool_exhausted",
            pool_size=size,
        )

    async def write_telemetry(self, rows: Sequence[TelemetryRow]) -> None:
        """Store rows with one COPY: all of them or none."""
        if not rows:
            return
        records = [_encode_row(row) for row in rows]
        if self.copy_connection is not None:
            await self.copy_connection.copy("telemetry", records)
            return
        async with self._connect(write=True) as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                await driver.copy_records_to_table(
                    "telemetry", records=records, columns=TELEMETRY_COLUMNS
                )
            except _CONNECTION_ERRORS as exc:
                raw.invalidate(exc)
                raise StorageUnavailable(f"Database connection lost: {exc}") from exc

    async def ensure_partitions(
        self, days_ahead: int, today: date | None = None
    ) -> list[str]:
        """Create the daily partitions from ``today`` to ``days_ahead`` days later.

        Rows that already sit in the DEFAULT partition for a new day are moved
        into it, because PostgreSQL rejects attaching a range while the
        default partition still contains rows in it. Returns the names of the partitions
        created; existing ones are left alone.
        """
        today = today or datetime.now(UTC).date()
        created = []
        for offset in range(days_ahead + 1):
            day = today + timedelta(days=offset)
            if await self._create_partition(day):
                created.append(partition_name(day))
        if created:
            logger.info("telemetry_partitions_created", extra={"partitions": created})
        return created

    async def _create_partition(self, day: date) -> bool:
        name = partition_name(day)
        bounds = {"start": _day_start(day), "end": _day_start(day + timedelta(days=1))}
        async with self._connect(write=True) as conn:
            await conn.execute(
                text(f"SELECT pg_advisory_xact_lock({MAINTENANCE_LOCK_ID})")
            )
            exists = await conn.scalar(
                text("SELECT to_regclass(:name)"), {"name": name}
            )
            if exists is not None:
                return False
            # Block inserts into the default partition until the new range is
            # attached, so no row for it lands there after the move.
            await conn.execute(text("LOCK TABLE telemetry_default IN SHARE MODE"))
            await conn.execute(
                text(
                    f"CREATE TABLE {name} "
                    "(LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                )
            )
            await conn.execute(
                text(
                    f"WITH moved AS (DELETE FROM telemetry_default "
                    f"WHERE ts >= :start AND ts < :end RETURNING *) "
                    f"INSERT INTO {name} SELECT * FROM moved"
                ),
                bounds,
            )
            start, end = (value.isoformat() for value in bounds.values())
            await conn.execute(
                text(
                    f"ALTER TABLE telemetry ATTACH PARTITION {name} "
                    f"FOR VALUES FROM ('{start}') TO ('{end}')"
                )
            )
        return True

    async def partitions(self) -> list[str]:
        """Return the names of the daily telemetry partitions, oldest first."""
        query = text(
            "SELECT c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry'::regclass AND c.relname LIKE :pattern "
            "ORDER BY c.relname"
        )
        async with self._connect() as conn:
            result = await conn.execute(query, {"pattern": f"{PARTITION_PREFIX}%"})
            return list(result.scalars())

    async def drop_partitions_before(self, cutoff: datetime) -> list[str]:
        """Drop every daily partition that ends at or before ``cutoff``.

        Rows older than ``cutoff`` in the DEFAULT partition are deleted too, so
        nothing before the cutoff survives, and so are the analytics rollups of
        the hours that lose rows. Returns the dropped partition names.
        """
        cutoff = cutoff.astimezone(UTC)
        dropped = [
            name
            for name in await self.partitions()
            if _day_start(_partition_day(name) + timedelta(days=1)) <= cutoff
        ]
        async with self._connect(write=True) as conn:
            await conn.execute(
                text(f"SELECT pg_advisory_xact_lock({MAINTENANCE_LOCK_ID})")
            )
            for name in dropped:
                await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            await conn.execute(
                text("DELETE FROM telemetry_default WHERE ts < :cutoff"),
                {"cutoff": cutoff},
            )
            await delete_rollups_before(conn, cutoff)
        if dropped:
            logger.info("telemetry_partitions_dropped", extra={"partitions": dropped})
        return dropped

    async def start_maintenance(
        self, days_ahead: int, retention_days: int | None, interval_s: float = 3600.0
    ) -> None:
        """Run partition maintenance now, then every ``interval_s`` in the background.

        Each run creates the partitions ``days_ahead`` days ahead and, when
        ``retention_days`` is set, drops the ones older than that. An hourly
        run is cheap because existing partitions are skipped.
        """
        await self._maintain_once(days_ahead, retention_days)
        self._maintenance = asyncio.create_task(
            self._maintain(days_ahead, retention_days, interval_s),
            name="telemetry-partitions",
        )

    async def _maintain_once(self, days_ahead: int, retention_days: int | None) -> None:
        await self.ensure_partitions(days_ahead)
        if retention_days is not None:
            cutoff = datetime.now(UTC) - timedelta(days=retention_days)
            await self.drop_partitions_before(cutoff)

    async def _maintain(
        self, days_ahead: int, retention_days: int | None, interval_s: float
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._maintain_once(days_ahead, retention_days)
            except (StorageUnavailable, DBAPIError, OperationalError) as exc:
                logger.warning("telemetry_partitions_failed", extra={"error": str(exc)})
                await asyncio.sleep(min(interval_s, MAINTENANCE_RETRY_S))


def _partition_day(name: str) -> date:
    return datetime.strptime(name.removeprefix(PARTITION_PREFIX), "%Y%m%d").date()
