"""SQLite telemetry batches written on the raw driver, bypassing SQLAlchemy per row.

SQLAlchemy's executemany runs Python bind processors for every row on the
event loop, which made the telemetry writer fleethub's ingest bottleneck.
This path hands the driver ready-made values and writes exactly what the
SQLAlchemy path writes, so reads through SQLAlchemy are unchanged. PostgreSQL
has its own COPY path in ``storage/postgres.py``. Measured before and after
in ``BENCHMARKS.md``.

For a database file, :class:`SqliteTelemetryWriter` keeps a sqlite3
connection and a thread of its own and writes a whole batch (its inserts and
the commit) in one call to that thread. Through aiosqlite each statement,
the commit and the pool's reset were separate round trips to its thread,
each waiting for a turn of a busy event loop. Other databases (in memory)
go through the engine's aiosqlite connection with
:func:`insert_telemetry_sqlite`.

Rows go in as multi-row ``INSERT ... VALUES (...), (...)`` statements rather
than one ``executemany``. The sqlite3 module releases the GIL around every
step of a statement, and executemany steps once per row. On a busy server the
database thread then waited for the GIL again after each row, so a batch of
a few thousand rows took hundreds of milliseconds. A multi-row statement
binds its values in one go and inserts them all in a single step.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from fleethub.errors import StorageUnavailable
from fleethub.models import TelemetryRow

COLUMNS = TelemetryRow._fields

# Rows per statement, at most. Chunks are powers of two up to this, so a
# connection prepares at most eleven distinct statements and its statement
# cache keeps them. 1,024 rows bind 14,336 values, under the 32,766 that
# SQLite allows by default since version 3.32.
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


class SqliteTelemetryWriter:
    """Write telemetry batches to a SQLite file on a connection of its own.

    The connection lives in a single worker thread, opened on first use, with
    the settings the engine's connections get (WAL, ``synchronous=NORMAL``,
    a busy timeout), so it waits for other writers like they do.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="telemetry-sqlite"
        )
        self._connection: sqlite3.Connection | None = None

    async def write(self, rows: Sequence[TelemetryRow]) -> None:
        """Store ``rows`` in one transaction; raise StorageUnavailable if locked."""
        values = sqlite_values(rows)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._write, len(rows), values)
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"Database unavailable: {exc}") from exc

    async def close(self) -> None:
        """Close the connection in its thread, then stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _write(self, count: int, values: list[Any]) -> None:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._connect()
        width = len(COLUMNS)
        start = 0
        with connection:  # commits, or rolls back if a statement fails
            for size in chunk_sizes(count):
                end = start + size * width
                connection.execute(insert_statement(size), values[start:end])
                start = end

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False)
        try:
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


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
