"""Telemetry batches into PostgreSQL with COPY instead of INSERT.

COPY skips SQLAlchemy's per-row parameter processing and the server's
per-statement parsing. Measured on the 2-core benchmark machine
(``BENCHMARKS.md``), a 500-row batch took about 87 µs per row through
``insert().values`` executemany and about 26 µs per row through COPY.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from fleethub.errors import StorageUnavailable
from fleethub.models import TelemetryRow

COLUMNS = TelemetryRow._fields


async def copy_telemetry(conn: AsyncConnection, rows: Sequence[TelemetryRow]) -> None:
    """Write ``rows`` with one COPY on the asyncpg connection behind ``conn``.

    Raises :class:`StorageUnavailable` when the connection is lost, so the
    writer retries the batch as it does for INSERT.
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    try:
        await driver.copy_records_to_table(
            "telemetry", records=[_record(row) for row in rows], columns=COLUMNS
        )
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        raise StorageUnavailable(
            f"Database connection lost during COPY: {exc}"
        ) from exc


def _record(row: TelemetryRow) -> tuple[Any, ...]:
    # SQLAlchemy's asyncpg dialect registers a json codec that takes JSON text.
    if row.lidar_ranges is None:
        return row
    return (*row[:-1], msgspec.json.encode(row.lidar_ranges).decode())
