"""SQLite telemetry batches written on the raw driver, bypassing SQLAlchemy per row.

SQLAlchemy's executemany runs Python bind processors for every row on the
event loop, which made the telemetry writer fleethub's ingest bottleneck.
This path hands aiosqlite ready-made values and writes exactly what the
SQLAlchemy path writes, so reads through SQLAlchemy are unchanged. PostgreSQL
has its own COPY path in ``storage/postgres.py``. Measured before and after
in ``BENCHMARKS.md``.

Rows go in as multi-row ``INSERT ... VALUES (...), (...)`` statements rather
than one ``executemany``. The sqlite3 module releases the GIL around every
step of a statement, and executemany steps once per row: on a busy server the
database thread then waits for the GIL again after each row, and a batch of a
few thousand rows took hundreds of milliseconds. A multi-row statement binds
its values in one go and inserts them all in a single step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from fleethub.errors import StorageUnavailable
from fleethub.models import TelemetryRow

COLUMNS = TelemetryRow._fields

# Rows per statement, at most. Chunks are powers of two up to this, so a
# connection prepares at most eleven distinct statements and its statement
# cache keeps them. 1,024 rows bind 14,336 values, under the 32,766 that
# SQLite allows by default.
MAX_ROWS_PER_STATEMENT = 1024

_ROW_PLACEHOLDERS = f"({', '.join('?' * len(COLUMNS))})"
_INSERT_PREFIX = f"INSERT INTO telemetry ({', '.join(COLUMNS)}) VALUES "
_statements: dict[int, str] = {}


def insert_statement(rows: int) -> str:
    """Return the INSERT statement for ``rows`` rows (built once per size)."""
    statement = _statements.get(rows)
    if statement is None:
        statement = _INSERT_PREFIX + ", ".join([_ROW_PLACEHOLDERS] * rows)
        _statements[rows] = statement
    return statement


def chunk_sizes(count: int) -> list[int]:
    """Split ``count`` rows into powers of two of at most MAX_ROWS_PER_STATEMENT."""
    sizes = []
    while count:
        size = min(count, MAX_ROWS_PER_STATEMENT)
        size = 1 << (size.bit_length() - 1)  # the largest power of two <= size
        sizes.append(size)
        count -= size
    return sizes


async def insert_telemetry_sqlite(
    conn: AsyncConnection, rows: Sequence[TelemetryRow]
) -> None:
    """Write ``rows`` with a few multi-row INSERTs on the aiosqlite connection.

    The surrounding ``engine.begin()`` block commits, as for the SQLAlchemy
    path. ``sqlite3.OperationalError`` (a locked or missing database) becomes
    :class:`StorageUnavailable`, as SQLAlchemy's ``OperationalError`` does in
    ``SqlStorage``; other ``sqlite3`` errors reach the caller unchanged.
    """
    values = sqlite_values(rows)
    width = len(COLUMNS)
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    start = 0
    try:
        for size in chunk_sizes(len(rows)):
            end = start + size * width
            # execute_fetchall runs the statement in one trip to aiosqlite's
            # thread and leaves no cursor to close (an INSERT returns no rows).
            await driver.execute_fetchall(insert_statement(size), values[start:end])
            start = end
    except sqlite3.OperationalError as exc:
        raise StorageUnavailable(f"Database unavailable: {exc}") from exc


def sqlite_values(rows: Sequence[TelemetryRow]) -> list[Any]:
    """Return the values of ``rows`` as one flat list, in column order."""
    values: list[Any] = []
    extend = values.extend
    encode = msgspec.json.encode
    for row in rows:
        lidar = row.lidar_ranges
        extend(
            (
                row.robot_id,
                # SQLAlchemy's DateTime on SQLite stores naive
                # "YYYY-MM-DD HH:MM:SS.ffffff" text. Rows are already UTC, so
                # dropping the zone is safe.
                row.ts.replace(tzinfo=None).isoformat(" ", "microseconds"),
                *row[2:-1],
                None if lidar is None else encode(lidar).decode(),
            )
        )
    return values
