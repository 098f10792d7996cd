"""The analytics scenario: one robot's aggregates over millions of stored rows.

The harness creates fleethub's schema (``fleethub migrate``), writes
synthetic telemetry for one robot straight into the database (SQLite
``executemany``, PostgreSQL ``COPY``), then times
``GET /api/robots/{id}/analytics`` over HTTP on fleethub and on the tutorial
baseline, which reads the rows into a pandas DataFrame and iterates it.

fleethub's first request on the fresh database also builds the hourly
rollups (see ``fleethub.storage.rollups``), so it is reported on its own as
``fleethub_cold_s``; ``fleethub_s`` is the median of the
``analytics_repeats`` requests after it.

When the baseline runs over fewer rows than fleethub (``--quick``, or the
10-million-row case), its time is scaled linearly to the full row count and
the row sets ``baseline_extrapolated``.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from fleethub.bench.config import BenchConfig, Reporter
from fleethub.bench.databases import asyncpg_dsn, fresh_database, sqlite_path
from fleethub.bench.servers import BenchError, start_server

ROBOT_ID = "bench-analytics"
CHUNK_ROWS = 100_000
HTTP_TIMEOUT_S = 1800.0
_START = datetime(2026, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "robot_id", "ts", "x", "y", "z", "roll", "pitch", "yaw",
    "linear", "angular", "battery", "status", "min_range", "lidar_ranges",
)  # fmt: skip


def run_analytics(config: BenchConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Time fleethub's and the baseline's analytics on every configured size."""
    rows = []
    for backend in config.backends:
        for count in config.analytics_rows.get(backend, ()):
            reporter.status(f"analytics: {count:,} rows on {backend}")
            rows.append(_analytics_one(config, backend, count))

    return rows


def _analytics_one(config: BenchConfig, backend: str, count: int) -> dict[str, Any]:
    with fresh_database(backend, config.work_dir, config.postgres_url) as url:
        _migrate(url)
        started = time.perf_counter()
        _seed(url, count)
        seed_s = time.perf_counter() - started
        cold, *warm = _time_endpoint(
            config, "fleethub", url, None, 1 + config.analytics_repeats
        )
        fleethub = statistics.median(warm)
        baseline = None
        baseline_rows = min(count, config.baseline_analytics_rows or count)
        if "tutorial" in config.server_kinds("analytics"):
            limit = baseline_rows if baseline_rows < count else None
            baseline = _time_endpoint(config, "tutorial", url, limit, 1)[0]
    scaled = baseline * count / baseline_rows if baseline is not None else None
    return {
        "scenario": "analytics",
        "server": "fleethub",
        "backend": backend,
        "rows": count,
        "seed_s": seed_s,
        "fleethub_cold_s": cold,
        "fleethub_s": fleethub,
        "fleethub_ms": fleethub * 1000,
        "baseline_rows": baseline_rows if baseline is not None else None,
        "baseline_s": scaled,
        "baseline_extrapolated": baseline is not None and baseline_rows < count,
        "speedup": scaled / fleethub if scaled and fleethub else None,
        "cold_speedup": scaled / cold if scaled and cold else None,
    }


def _migrate(url: str) -> None:
    command = [sys.executable, "-m", "fleethub", "migrate", "--database-url", url]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise BenchError(f"fleethub migrate failed: {completed.stderr[-2000:]}")


def _time_endpoint(
    config: BenchConfig, kind: str, url: str, max_rows: int | None, repeats: int
) -> list[float]:
    """Return the wall time of each of ``repeats`` analytics requests, seconds."""
    params = {"max_rows": max_rows} if max_rows is not None else {}
    with start_server(config.server_spec(kind, url), config.work_dir) as server:
        with httpx.Client(base_url=server.http_url, timeout=HTTP_TIMEOUT_S) as client:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                response = client.get(
                    f"/api/robots/{ROBOT_ID}/analytics", params=params
                )
                times.append(time.perf_counter() - started)
                if not response.is_success:
                    raise BenchError(
                        f"{kind} analytics failed with HTTP {response.status_code}: "
                        f"{response.text[:500]}"
                    )

    return times


def synthetic_rows(count: int) -> Iterator[tuple[Any, ...]]:
    """Yield ``count`` rows of one robot at 1 Hz driving a circle.

    The battery drains and the robot charges for 60 samples every 3,600, so
    the charging-cycle count is not trivially zero.
    """
    for i in range(count):
        angle = i * 0.01
        charging = i % 3600 >= 3540
        yield (
            ROBOT_ID, _START + timedelta(seconds=i),
            10 * math.cos(angle), 10 * math.sin(angle), 0.0,
            0.0, 0.0, angle % math.tau,
            0.0 if charging else 0.1, 0.01,
            100.0 - (i % 3600) / 36.0, "charging" if charging else "moving",
            None, None,
        )  # fmt: skip


def _seed(url: str, count: int) -> None:
    if url.startswith("sqlite"):
        _seed_sqlite(sqlite_path(url), count)
    else:
        asyncio.run(_seed_postgres(asyncpg_dsn(url), count))


def _seed_sqlite(path: str, count: int) -> None:
    # SQLAlchemy stores DateTime on SQLite as naive UTC text in this format.
    insert = (
        f"INSERT INTO telemetry ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(_COLUMNS))})"
    )
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(
                insert,
                (
                    (row[0], row[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[2:])
                    for row in synthetic_rows(count)
                ),
            )
            connection.execute(
                "INSERT OR IGNORE INTO robots VALUES (?, ?, ?)",
                (ROBOT_ID, "2026-01-01 00:00:00.000000", None),
            )
    finally:
        connection.close()


async def _seed_postgres(dsn: str, count: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        rows = synthetic_rows(count)
        while chunk := [row for _, row in zip(range(CHUNK_ROWS), rows, strict=False)]:
            await connection.copy_records_to_table(
                "telemetry", records=chunk, columns=_COLUMNS
            )
        await connection.execute(
            "INSERT INTO robots VALUES ($1, $2, NULL) ON CONFLICT DO NOTHING",
            ROBOT_ID,
            _START,
        )
        await connection.execute("ANALYZE telemetry")
    finally:
        await connection.close()
