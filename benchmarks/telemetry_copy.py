"""Compare COPY and multi-row INSERT for telemetry batches on PostgreSQL.

Usage: python benchmarks/telemetry_copy.py postgresql+asyncpg://postgres@127.0.0.1/DB

The database must be empty and migrated. Writes ``--rows`` rows (180-beam
scans, like the bundled Intel Research Lab log) in batches of ``--batch``
through each path and prints rows per second.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from fleethub.backends import create_engine_for, open_storage
from fleethub.models import TelemetryRow
from fleethub.settings import Settings
from fleethub.storage.postgres import PostgresStorage
from fleethub.storage.sql import SqlStorage


def make_rows(count: int) -> list[TelemetryRow]:
    start = datetime.now(UTC) - timedelta(hours=1)
    scan = [1.0 + (beam % 40) / 10 for beam in range(180)]
    return [
        TelemetryRow(
            "bench",
            start + timedelta(milliseconds=index),
            index / 100,
            0.0,
            0.0,
            0.0,
            0.0,
            0.1,
            0.5,
            0.0,
            80.0,
            "moving",
            1.0,
            scan,
        )
        for index in range(count)
    ]


async def timed(storage: SqlStorage, rows: list[TelemetryRow], batch: int) -> float:
    started = time.perf_counter()
    for offset in range(0, len(rows), batch):
        await storage.write_telemetry(rows[offset : offset + batch])
    return len(rows) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    settings = Settings(database_url=args.database_url)
    storage = await open_storage(settings, create_engine_for(settings))
    assert isinstance(storage, PostgresStorage)
    rows = make_rows(args.rows)
    copy_rate = await timed(storage, rows, args.batch)
    async with storage.engine.begin() as conn:
        await conn.execute(text("TRUNCATE telemetry"))
    insert_rate = await timed(_InsertOnly(storage.engine), rows, args.batch)
    print(f"COPY:   {copy_rate:,.0f} rows/s")
    print(f"INSERT: {insert_rate:,.0f} rows/s")
    await storage.close()


class _InsertOnly(SqlStorage):
    """The base class's multi-row INSERT path, for comparison."""


if __name__ == "__main__":
    asyncio.run(main())
