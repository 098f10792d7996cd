"""PostgreSQL-only storage behaviour: partitions, retention, the pool and COPY."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from fleethub.backends import create_engine_for, open_storage
from fleethub.errors import StorageUnavailable
from fleethub.models import TelemetryRow
from fleethub.settings import Settings
from fleethub.storage import migrate
from fleethub.storage.postgres import PostgresStorage, partition_name

DAY = date(2030, 6, 1)

# The COPY connection is the one whose latest statement was a COPY.
TERMINATE_COPY_BACKEND = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND query LIKE 'COPY %'"
)


def row(ts: datetime) -> TelemetryRow:
    return TelemetryRow(
        "r1",
        ts,
        1.0,
        2.0,
        0.0,
        0.0,
        0.0,
        0.5,
        0.3,
        0.0,
        50.0,
        "moving",
        1.0,
        [1.0, 2.0],
    )


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


async def open_postgres(url: str, **overrides: object) -> PostgresStorage:
    settings = Settings(database_url=url, **overrides)  # type: ignore[arg-type]
    engine = create_engine_for(settings)
    await migrate.upgrade(engine)
    storage = await open_storage(settings, engine)
    assert isinstance(storage, PostgresStorage)
    return storage


@pytest.fixture
async def storage(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    storage = await open_postgres(postgres_url, telemetry_partition_days_ahead=2)
    yield storage
    await storage.close()


async def count_in(storage: PostgresStorage, table: str) -> int:
    async with storage.engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM ONLY {table}")))


async def test_start_creates_partitions_ahead(storage: PostgresStorage) -> None:
    """Opening the storage creates today's partition and the next two days'."""
    today = datetime.now(UTC).date()
    expected = [partition_name(today + timedelta(days=n)) for n in range(3)]
    assert set(expected) <= set(await storage.partitions())


async def test_ensure_partitions_idempotent(storage: PostgresStorage) -> None:
    """A second run creates nothing new."""
    assert await storage.ensure_partitions(1, today=DAY) == [
        partition_name(DAY),
        partition_name(DAY + timedelta(days=1)),
    ]
    assert await storage.ensure_partitions(1, today=DAY) == []


async def test_new_partition_takes_default_rows(storage: PostgresStorage) -> None:
    """Rows stored before their day's partition existed move into it."""
    rows = [row(at(DAY, 1)), row(at(DAY, 23)), row(at(DAY + timedelta(days=1), 0))]
    await storage.write_telemetry(rows)
    assert await count_in(storage, "telemetry_default") == 3
    await storage.ensure_partitions(0, today=DAY)
    assert await count_in(storage, partition_name(DAY)) == 2
    assert await count_in(storage, "telemetry_default") == 1
    assert await storage.count_telemetry("r1") == 3


async def test_drop_partitions_before_cutoff(storage: PostgresStorage) -> None:
    """Retention drops whole days before the cutoff and older default rows."""
    await storage.ensure_partitions(2, today=DAY)
    later = DAY + timedelta(days=2)
    rows = [row(at(DAY, 5)), row(at(later, 5)), row(at(DAY - timedelta(days=9), 5))]
    await storage.write_telemetry(rows)
    dropped = await storage.drop_partitions_before(at(later, 0))
    assert partition_name(DAY) in dropped
    assert partition_name(DAY + timedelta(days=1)) in dropped
    assert await storage.partitions() == [partition_name(later)]
    remaining = await storage.telemetry("r1", None, None, 10)
    assert [r.ts for r in remaining] == [at(later, 5)]


async def test_pool_exhaustion_raises(postgres_url: str) -> None:
    """With every connection busy past the timeout, a call fails with a clear error."""
    storage = await open_postgres(
        postgres_url, database_pool_size=2, database_pool_timeout_s=0.2
    )
    try:
        assert storage.engine.pool.size() == 1  # type: ignore[attr-defined]
        async with storage.engine.connect():
            with pytest.raises(StorageUnavailable) as caught:
                await storage.ping()
        assert caught.value.code == "database_pool_exhausted"
        assert "FLEETHUB_DATABASE_POOL_SIZE" in caught.value.message
        await storage.ping()
    finally:
        await storage.close()


async def test_copy_rejects_bad_row(storage: PostgresStorage) -> None:
    """A batch with a row the database rejects fails without storing any row."""
    bad = row(at(DAY, 2))._replace(status="x" * 40)
    with pytest.raises(Exception) as caught:
        await storage.write_telemetry([row(at(DAY, 1)), bad])
    assert not isinstance(caught.value, StorageUnavailable)
    assert await storage.count_telemetry() == 0


async def test_concurrent_maintenance_creates_once(
    storage: PostgresStorage, postgres_url: str
) -> None:
    """Two processes creating the same partition at once create it exactly once."""
    other = await open_postgres(postgres_url)
    try:
        results = await asyncio.gather(
            storage.ensure_partitions(0, today=DAY),
            other.ensure_partitions(0, today=DAY),
        )
    finally:
        await other.close()
    assert sorted(results, key=len) == [[], [partition_name(DAY)]]


async def test_retention_drops_rollups_of_dropped_hours(
    storage: PostgresStorage,
) -> None:
    """Retention deletes the rollups of hours that lose rows, and analytics follow."""
    await storage.ensure_partitions(1, today=DAY)
    next_day = DAY + timedelta(days=1)
    rows = [
        row(at(DAY, 20) + timedelta(minutes=10 * n))._replace(x=float(n))
        for n in range(60)
    ]
    # A later row makes every hour above final, so all of them get rolled up.
    rows.append(row(at(next_day + timedelta(days=5), 3))._replace(x=100.0))
    await storage.write_telemetry(rows)
    before = await storage.analytics("r1", None, None, 3600.0)
    # The cutoff drops DAY's partition and cuts into the hour after it, whose
    # rows stay in their partition but whose rollup must go.
    cutoff = at(next_day, 0) + timedelta(minutes=30)
    dropped = await storage.drop_partitions_before(cutoff)
    async with storage.engine.connect() as conn:
        oldest_rollup = await conn.scalar(
            text("SELECT min(hour) FROM telemetry_rollups")
        )
        oldest_span = await conn.scalar(
            text("SELECT min(span_start) FROM telemetry_rollup_spans")
        )
    after = await storage.analytics("r1", None, None, 3600.0)
    kept = [r for r in rows if r.ts >= at(next_day, 0)]

    assert before.samples == len(rows)
    assert partition_name(DAY) in dropped
    assert oldest_rollup == at(next_day, 1)
    assert oldest_span == at(next_day, 1)
    assert after.samples == len(kept)
    assert after.first_sample_at == kept[0].ts
    assert after.distance_m == pytest.approx(100.0 - kept[0].x)


async def backends_of(storage: PostgresStorage) -> int:
    """Count the server connections to this test's database, the caller's included."""
    async with storage.engine.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
        return int(await conn.scalar(query))


async def test_copy_connection_within_budget(postgres_url: str) -> None:
    """Pool plus COPY connection never exceed FLEETHUB_DATABASE_POOL_SIZE."""
    storage = await open_postgres(
        postgres_url, database_pool_size=3, database_pool_timeout_s=0.2
    )
    try:
        assert storage.copy_connection is not None
        assert storage.engine.pool.size() == 2  # type: ignore[attr-defined]
        async with storage.engine.connect():
            # Both pooled connections are checked out (this one and the one
            # backends_of takes), yet COPY does not wait for the pool.
            await storage.write_telemetry([row(at(DAY, 1))])
            assert await backends_of(storage) == 3
        assert storage.copy_connection.connections_opened == 1
        assert await storage.count_telemetry("r1") == 1
    finally:
        await storage.close()


async def test_pool_size_one_shares_pool(postgres_url: str) -> None:
    """With a budget of one connection, COPY borrows the pool's only connection."""
    storage = await open_postgres(postgres_url, database_pool_size=1)
    try:
        assert storage.copy_connection is None
        assert storage.engine.pool.size() == 1  # type: ignore[attr-defined]
        await storage.write_telemetry([row(at(DAY, 1)), row(at(DAY, 2))])
        assert await storage.count_telemetry("r1") == 2
        assert await backends_of(storage) == 1
    finally:
        await storage.close()


async def test_copy_connection_reused(storage: PostgresStorage) -> None:
    """Consecutive batches go through one server connection."""
    assert storage.copy_connection is not None
    for hour in range(3):
        await storage.write_telemetry([row(at(DAY, hour))])
    assert storage.copy_connection.connections_opened == 1
    assert await storage.count_telemetry("r1") == 3


async def terminate_copy_backend(storage: PostgresStorage) -> None:
    """End the COPY connection's server process, as an administrator might."""
    async with storage.engine.connect() as conn:
        ended = await conn.scalar(text(TERMINATE_COPY_BACKEND))
    assert ended == 1


async def test_copy_reconnects_after_terminate(postgres_url: str) -> None:
    """After its server process is terminated, the next COPY opens a new connection."""
    storage = await open_postgres(postgres_url, database_pool_size=2)
    try:
        assert storage.copy_connection is not None
        await storage.write_telemetry([row(at(DAY, 1))])
        await terminate_copy_backend(storage)
        # Wait for asyncpg to see the server close the connection, so the
        # next write takes the reopen path rather than failing mid-COPY.
        async with asyncio.timeout(10):
            while True:
                if not storage.copy_connection.connected:
                    break
                await asyncio.sleep(0.01)
        await storage.write_telemetry([row(at(DAY, 2))])
        assert storage.copy_connection.connections_opened == 2
        assert await storage.count_telemetry("r1") == 2
    finally:
        await storage.close()
