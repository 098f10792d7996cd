"""Per-robot, per-hour telemetry rollups behind ``GET /api/robots/{id}/analytics``.

Every analytics figure is a sum over samples or over pairs of consecutive
samples, so it splits exactly by time. One ``telemetry_rollups`` row contains,
for one robot, one gap setting and one UTC hour, the sums over the hour's
samples and over the pairs inside the hour, plus the hour's first and last
sample. A query over ``[start, end)`` reads the rollups of the whole hours in
the range, summarises the raw rows of the partial hours at both edges with
the same SQL, and adds up the pieces in Python. The pair of samples that
straddles two pieces is computed from the last sample of one and the first
sample of the next, so the result equals a single pass over the raw rows.

An hour is final, and only then rolled up, once the robot has a stored row
at or after the hour's end. The ingest pipeline accepts a robot's states in
strictly increasing timestamp order and one writer task commits them in that
order, so a later commit never adds a row to a final hour. That is why the
telemetry writer does not need to tell the rollups anything. The one way
around it, a robot sending older states after retention deleted its whole
history, only touches hours whose rollups retention deleted as well.

NOTE: after a failover, an old process can write the duplicate rows it held
during a database outage into hours that are already rolled up. Those
rollups miss the rows until the robot's rollup and span rows are deleted by
hand, as ``docs/production.md`` describes under "Analytics rollups".

A query builds the rollups it needs and finds missing: one
``SELECT ... GROUP BY hour`` per span of final hours that
``telemetry_rollup_spans`` does not list yet, then one short write of the
rows. So results never depend on a background task having run. Building
costs about one raw pass over the rows on PostgreSQL and about 1.5 raw
passes on SQLite (measured over 1 million rows on a shared 2-core machine).
A background task (:meth:`HourlyRollups.run`, started by
``fleethub.backends.open_storage``) also rolls up the newly final hours of
every robot every few minutes for the configured gap, so queries rarely pay
that cost. It rolls up a whole history once, after the upgrade, and then
about one hour per robot per hour.

Operating time depends on ``analytics_max_gap_s``, so rollups are kept per
gap value: changing the setting starts a new, initially empty set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleethub.errors import StorageUnavailable
from fleethub.models import Analytics
from fleethub.storage.schema import telemetry_rollup_spans, telemetry_rollups

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)

# Two-key advisory lock on PostgreSQL: this class id plus a hash of the robot
# id, so processes building rollups for one robot take turns.
ROLLUP_LOCK_CLASS = 0x726F6C6C  # "roll"

# Both summaries return one row per UTC hour that has samples in
# [start, end): sums over the hour's samples, sums over the pairs of
# consecutive samples that both lie in the hour, and the hour's first and
# last sample. With hour-aligned bounds a row is a rollup; with other bounds
# the edge hours are cut to the range.
#
# On SQLite, ts is "YYYY-MM-DD HH:MM:SS.ffffff" text, so the hour is a prefix
# and time steps are computed in whole microseconds (julianday() is only good
# to a millisecond, which would move steps near the gap limit). The previous
# sample is in the same hour when the step is no longer than the time since
# the hour began. The last sample's columns are bare columns next to the one
# max() aggregate, and SQLite documents that such columns come from the row
# that contains the maximum. That saves a lead() window. The ROWS frame does not
# change lag(), but makes SQLite keep a smaller window.
_EPOCH_US_SQLITE = (
    "(unixepoch(substr(ts, 1, 19)) * 1000000 + CAST(substr(ts, 21, 6) AS INTEGER))"
)
_SUMMARY_SQLITE = f"""
WITH s AS (
    SELECT
        ts, x, y, linear, battery, status,
        {_EPOCH_US_SQLITE} AS us,
        {_EPOCH_US_SQLITE} - lag({_EPOCH_US_SQLITE}) OVER w AS dt_us,
        x - lag(x) OVER w AS dx,
        y - lag(y) OVER w AS dy,
        lag(status) OVER w AS prev_status
    FROM telemetry
    WHERE robot_id = :robot_id AND ts >= :start AND ts < :end
    WINDOW w AS (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
),
t AS (
    SELECT
        s.*,
        substr(ts, 1, 13) AS hour_key,
        coalesce(dt_us <= us % 3600000000, 0) AS same_hour
    FROM s
)
SELECT
    hour_key || ':00:00.000000' AS hour,
    count(*) AS samples,
    total(CASE WHEN same_hour THEN sqrt(dx * dx + dy * dy) END) AS distance_m,
    total(abs(linear)) AS abs_linear_sum,
    coalesce(sum(CASE WHEN same_hour AND dt_us <= :max_gap_us THEN dt_us END), 0)
        AS operating_us,
    coalesce(sum(CASE WHEN same_hour AND status = 'charging'
        AND prev_status <> 'charging' THEN 1 END), 0) AS charging_starts,
    total(battery) AS battery_sum,
    count(battery) AS battery_samples,
    group_concat(CASE WHEN NOT same_hour THEN ts END) AS first_ts,
    total(CASE WHEN NOT same_hour THEN x END) AS first_x,
    total(CASE WHEN NOT same_hour THEN y END) AS first_y,
    group_concat(CASE WHEN NOT same_hour THEN status END) AS first_status,
    max(ts) AS last_ts,
    x AS last_x,
    y AS last_y,
    status AS last_status
FROM t
GROUP BY hour_key
"""

# On PostgreSQL the step is the distance between two points (computed in C),
# and time steps are intervals, exact to the microsecond. date_bin() cuts UTC
# hours whatever the session time zone is.
_SUMMARY_POSTGRESQL = """
WITH s AS (
    SELECT
        ts, linear, battery, status, x, y,
        date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
        ts - lag(ts) OVER w AS dt,
        lag(ts) OVER w AS prev_ts,
        lead(ts) OVER w AS next_ts,
        point(x, y) <-> lag(point(x, y)) OVER w AS step,
        lag(status) OVER w AS prev_status
    FROM telemetry
    WHERE robot_id = :robot_id AND ts >= :start AND ts < :end
    WINDOW w AS (ORDER BY ts)
),
t AS (
    SELECT
        s.*,
        coalesce(prev_ts >= hour, false) AS same_hour,
        coalesce(next_ts >= hour + interval '1 hour', true) AS last_in_hour
    FROM s
)
SELECT
    hour,
    count(*) AS samples,
    coalesce(sum(step) FILTER (WHERE same_hour), 0.0) AS distance_m,
    sum(abs(linear)) AS abs_linear_sum,
    coalesce(round(extract(epoch FROM sum(dt) FILTER (
        WHERE same_hour AND dt <= make_interval(secs => :max_gap_s)
    )) * 1000000)::bigint, 0) AS operating_us,
    count(*) FILTER (
        WHERE same_hour AND status = 'charging' AND prev_status <> 'charging'
    ) AS charging_starts,
    coalesce(sum(battery), 0.0) AS battery_sum,
    count(battery) AS battery_samples,
    min(ts) AS first_ts,
    max(x) FILTER (WHERE NOT same_hour) AS first_x,
    max(y) FILTER (WHERE NOT same_hour) AS first_y,
    max(status) FILTER (WHERE NOT same_hour) AS first_status,
    max(ts) AS last_ts,
    max(x) FILTER (WHERE last_in_hour) AS last_x,
    max(y) FILTER (WHERE last_in_hour) AS last_y,
    max(status) FILTER (WHERE last_in_hour) AS last_status
FROM t
GROUP BY hour
"""

_SUMMARY_SQL = {"sqlite": _SUMMARY_SQLITE, "postgresql": _SUMMARY_POSTGRESQL}

# Two scalar subqueries, because SQLite reads min() or max() from the index
# only when the query has a single such aggregate.
_BOUNDS_SQL = """
SELECT
    (SELECT min(ts) FROM telemetry WHERE robot_id = :robot_id) AS first_ts,
    (SELECT max(ts) FROM telemetry WHERE robot_id = :robot_id) AS last_ts
"""

# Seconds between background passes. A robot's hour becomes final once an
# hour, so a pass every few minutes leaves little for a query to build.
BACKGROUND_INTERVAL_S = 300.0

# Far enough out that an open-ended range covers everything, close enough that
# every driver can bind it.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)

Connect = Callable[..., contextlib.AbstractAsyncContextManager[AsyncConnection]]


@dataclass(slots=True)
class Piece:
    """Sums over the samples of one stretch of time, plus its first and last one.

    ``distance_m``, ``operating_us`` and ``charging_starts`` count only the
    pairs of consecutive samples inside the stretch.
    """

    samples: int
    distance_m: float
    abs_linear_sum: float
    operating_us: int
    charging_starts: int
    battery_sum: float
    battery_samples: int
    first_ts: datetime
    first_x: float
    first_y: float
    first_status: str
    last_ts: datetime
    last_x: float
    last_y: float
    last_status: str

    @classmethod
    def from_row(cls, row: Any) -> Piece:
        return cls(
            samples=int(row["samples"]),
            distance_m=float(row["distance_m"]),
            abs_linear_sum=float(row["abs_linear_sum"]),
            operating_us=int(row["operating_us"]),
            charging_starts=int(row["charging_starts"]),
            battery_sum=float(row["battery_sum"]),
            battery_samples=int(row["battery_samples"]),
            first_ts=parse_time(row["first_ts"]),
            first_x=float(row["first_x"]),
            first_y=float(row["first_y"]),
            first_status=row["first_status"],
            last_ts=parse_time(row["last_ts"]),
            last_x=float(row["last_x"]),
            last_y=float(row["last_y"]),
            last_status=row["last_status"],
        )


def parse_time(value: Any) -> datetime:
    """Read a timestamp as aware UTC, because SQLite returns naive values or text."""
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def floor_hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


def combine(
    robot_id: str,
    start: datetime | None,
    end: datetime | None,
    pieces: Sequence[Piece],
    max_gap_s: float,
) -> Analytics:
    """Add up pieces in time order, counting the pair where two pieces meet.

    The first sample of the range has no predecessor, so it counts as a
    charging start when it is charging, as in a single pass over the rows.
    """
    max_gap_us = max_gap_s * 1_000_000
    samples = charging = operating_us = battery_samples = 0
    distance = abs_linear = battery = 0.0
    previous: Piece | None = None
    for piece in pieces:
        samples += piece.samples
        distance += piece.distance_m
        abs_linear += piece.abs_linear_sum
        operating_us += piece.operating_us
        charging += piece.charging_starts
        battery += piece.battery_sum
        battery_samples += piece.battery_samples
        if previous is None:
            charging += piece.first_status == "charging"
        else:
            distance += math.hypot(
                piece.first_x - previous.last_x, piece.first_y - previous.last_y
            )
            step = piece.first_ts - previous.last_ts
            step_us = step // timedelta(microseconds=1)
            if step_us <= max_gap_us:
                operating_us += step_us
            charging += (
                piece.first_status == "charging" and previous.last_status != "charging"
            )
        previous = piece
    return Analytics(
        robot_id=robot_id,
        start=start,
        end=end,
        samples=samples,
        distance_m=distance,
        avg_linear_velocity_mps=abs_linear / samples if samples else None,
        operating_hours=operating_us / 3_600_000_000,
        charging_cycles=charging,
        avg_battery=battery / battery_samples if battery_samples else None,
        first_sample_at=pieces[0].first_ts if pieces else None,
        last_sample_at=pieces[-1].last_ts if pieces else None,
    )


def missing_spans(
    start: datetime, end: datetime, spans: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """Return the parts of ``[start, end)`` that no span covers, in order."""
    missing = []
    cursor = start
    for span_start, span_end in sorted(spans):
        if span_start >= end:
            break
        if span_end <= cursor:
            continue
        if span_start > cursor:
            missing.append((cursor, span_start))
        cursor = span_end
        if cursor >= end:
            return missing
    if cursor < end:
        missing.append((cursor, end))
    return missing


def merge_spans(
    spans: Sequence[tuple[datetime, datetime]],
) -> list[tuple[datetime, datetime]]:
    """Merge overlapping and touching spans into as few as possible."""
    merged: list[tuple[datetime, datetime]] = []
    for span_start, span_end in sorted(spans):
        if merged and span_start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span_end))
        else:
            merged.append((span_start, span_end))
    return merged


class HourlyRollups:
    """Analytics from hourly rollups plus the raw rows at the range's edges."""

    def __init__(self, connect: Connect, dialect: str) -> None:
        self._connect = connect
        self.dialect = dialect
        self._summary_sql = text(_SUMMARY_SQL[dialect] + "ORDER BY hour")
        insert_for_dialect = (
            postgresql_insert if dialect == "postgresql" else sqlite_insert
        )
        self._insert_rollups = insert_for_dialect(
            telemetry_rollups
        ).on_conflict_do_nothing()
        # fleethub runs one process on SQLite, so this lock serialises builds
        # there. PostgreSQL adds an advisory lock for other processes.
        self._build_lock = asyncio.Lock()

    async def analytics(
        self,
        robot_id: str,
        start: datetime | None,
        end: datetime | None,
        max_gap_s: float,
    ) -> Analytics:
        """Aggregate the robot's telemetry in ``[start, end)``, rolling up as needed."""
        range_start = MIN_TIME if start is None else parse_time(start)
        range_end = MAX_TIME if end is None else parse_time(end)
        async with self._connect() as conn:
            bounds = (
                await conn.execute(text(_BOUNDS_SQL), {"robot_id": robot_id})
            ).one()
            if bounds.first_ts is None:
                return combine(robot_id, start, end, [], max_gap_s)
            first_ts = parse_time(bounds.first_ts)
            last_ts = parse_time(bounds.last_ts)
            if range_start > last_ts or range_end <= first_ts:
                return combine(robot_id, start, end, [], max_gap_s)
            # Cutting the range to the stored rows changes no figure, keeps
            # the spans recorded to the robot's history and keeps hour
            # arithmetic away from the ends of the datetime range.
            range_start = max(range_start, floor_hour(first_ts))
            range_end = min(range_end, last_ts + timedelta(microseconds=1))
            whole_start = ceil_hour(range_start)
            # Hours before the one containing the newest row are final.
            whole_end = min(floor_hour(range_end), floor_hour(last_ts))
            if whole_start >= whole_end:
                pieces = await self._summarise(
                    conn, robot_id, range_start, range_end, max_gap_s
                )
                return combine(robot_id, start, end, pieces, max_gap_s)
            spans = await self._spans(conn, robot_id, max_gap_s)
            missing = missing_spans(whole_start, whole_end, spans)
            if not missing:
                pieces = await self._pieces(
                    conn, robot_id, range_start, whole_start, whole_end, range_end,
                    max_gap_s,
                )  # fmt: skip
                return combine(robot_id, start, end, pieces, max_gap_s)
        await self._build(robot_id, max_gap_s, whole_start, whole_end)
        async with self._connect() as conn:
            pieces = await self._pieces(
                conn, robot_id, range_start, whole_start, whole_end, range_end,
                max_gap_s,
            )  # fmt: skip
        return combine(robot_id, start, end, pieces, max_gap_s)

    async def build_final(self, robot_id: str, max_gap_s: float) -> bool:
        """Roll up the robot's final hours not rolled up yet; True if there were any."""
        async with self._connect() as conn:
            bounds = (
                await conn.execute(text(_BOUNDS_SQL), {"robot_id": robot_id})
            ).one()
            if bounds.first_ts is None:
                return False
            start = floor_hour(parse_time(bounds.first_ts))
            end = floor_hour(parse_time(bounds.last_ts))
            if start >= end:
                return False
            if not missing_spans(
                start, end, await self._spans(conn, robot_id, max_gap_s)
            ):
                return False
        await self._build(robot_id, max_gap_s, start, end)
        return True

    async def run(
        self,
        robot_ids: Callable[[], Awaitable[list[str]]],
        max_gap_s: float,
        interval_s: float = BACKGROUND_INTERVAL_S,
    ) -> None:
        """Roll up the final hours of every robot now, then every ``interval_s``."""
        while True:
            try:
                await self._run_once(robot_ids, max_gap_s)
            except Exception:
                # An unexpected error must not end the background pass for
                # good: requests would still build rollups, but slowly.
                logger.exception("analytics_rollups_pass_failed")
            await asyncio.sleep(interval_s)

    async def _run_once(
        self, robot_ids: Callable[[], Awaitable[list[str]]], max_gap_s: float
    ) -> None:
        built = []
        try:
            for robot_id in await robot_ids():
                try:
                    if await self.build_final(robot_id, max_gap_s):
                        built.append(robot_id)
                except DBAPIError as exc:
                    # A statement failed for this robot, so log it and go on.
                    logger.warning(
                        "analytics_rollups_failed",
                        extra={"robot_id": robot_id, "error": str(exc)},
                    )
        except StorageUnavailable as exc:
            # The database is unreachable, so log one line per pass, not per robot.
            logger.warning("analytics_rollups_failed", extra={"error": exc.message})
        if built:
            logger.info("analytics_rollups_built", extra={"robot_ids": built})

    async def _pieces(
        self,
        conn: AsyncConnection,
        robot_id: str,
        range_start: datetime,
        whole_start: datetime,
        whole_end: datetime,
        range_end: datetime,
        max_gap_s: float,
    ) -> list[Piece]:
        """Return the head edge, the rollups of whole hours and the tail edge."""
        head = await self._summarise(
            conn, robot_id, range_start, whole_start, max_gap_s
        )
        rollups = await conn.execute(
            select(telemetry_rollups)
            .where(
                telemetry_rollups.c.robot_id == robot_id,
                telemetry_rollups.c.max_gap_s == max_gap_s,
                telemetry_rollups.c.hour >= whole_start,
                telemetry_rollups.c.hour < whole_end,
            )
            .order_by(telemetry_rollups.c.hour)
        )
        middle = [Piece.from_row(row) for row in rollups.mappings()]
        tail = await self._summarise(conn, robot_id, whole_end, range_end, max_gap_s)
        return [*head, *middle, *tail]

    async def _summarise(
        self,
        conn: AsyncConnection,
        robot_id: str,
        start: datetime,
        end: datetime,
        max_gap_s: float,
    ) -> list[Piece]:
        """Summarise the raw rows in ``[start, end)``, one piece per hour."""
        if start >= end:
            return []
        result = await conn.execute(
            self._summary_sql, self._summary_params(robot_id, start, end, max_gap_s)
        )
        return [Piece.from_row(row) for row in result.mappings()]

    def _summary_params(
        self, robot_id: str, start: datetime, end: datetime, max_gap_s: float
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"robot_id": robot_id, "max_gap_s": max_gap_s}
        if self.dialect == "sqlite":
            params["max_gap_us"] = max_gap_s * 1_000_000
            params["start"] = sqlite_time(start)
            params["end"] = sqlite_time(end)
        else:
            params["start"] = start
            params["end"] = end
        return params

    async def _spans(
        self, conn: AsyncConnection, robot_id: str, max_gap_s: float
    ) -> list[tuple[datetime, datetime]]:
        result = await conn.execute(
            select(
                telemetry_rollup_spans.c.span_start, telemetry_rollup_spans.c.span_end
            ).where(
                telemetry_rollup_spans.c.robot_id == robot_id,
                telemetry_rollup_spans.c.max_gap_s == max_gap_s,
            )
        )
        return [(parse_time(first), parse_time(last)) for first, last in result]

    async def _build(
        self, robot_id: str, max_gap_s: float, start: datetime, end: datetime
    ) -> None:
        """Roll up the final hours of ``[start, end)`` that no span lists yet.

        ``end`` must not be later than the hour of the robot's newest row, so
        every hour built here is final.
        """
        async with self._build_lock:
            # The long part, summarising the raw rows, runs in a read
            # transaction, because on SQLite a write transaction would hold
            # the database's only write lock and stall the telemetry writer.
            async with self._connect() as conn:
                spans = await self._spans(conn, robot_id, max_gap_s)
                missing = missing_spans(start, end, spans)
                values = []
                for span_start, span_end in missing:
                    pieces = await self._summarise(
                        conn, robot_id, span_start, span_end, max_gap_s
                    )
                    values.extend(
                        {"robot_id": robot_id, "max_gap_s": max_gap_s}
                        | {"hour": floor_hour(piece.first_ts)}
                        | dataclasses.asdict(piece)
                        for piece in pieces
                    )
            if not missing:
                return
            async with self._connect(write=True) as conn:
                if self.dialect == "postgresql":
                    # Another process may have built some of these hours since
                    # the read. The insert skips them, and the spans merge.
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:lock, hashtext(:robot))"),
                        {"lock": ROLLUP_LOCK_CLASS, "robot": robot_id},
                    )
                    spans = await self._spans(conn, robot_id, max_gap_s)
                if values:
                    await conn.execute(self._insert_rollups, values)
                await self._replace_spans(
                    conn, robot_id, max_gap_s, merge_spans([*spans, *missing])
                )

    async def _replace_spans(
        self,
        conn: AsyncConnection,
        robot_id: str,
        max_gap_s: float,
        spans: Sequence[tuple[datetime, datetime]],
    ) -> None:
        await conn.execute(
            delete(telemetry_rollup_spans).where(
                telemetry_rollup_spans.c.robot_id == robot_id,
                telemetry_rollup_spans.c.max_gap_s == max_gap_s,
            )
        )
        await conn.execute(
            insert(telemetry_rollup_spans),
            [
                {
                    "robot_id": robot_id,
                    "max_gap_s": max_gap_s,
                    "span_start": span_start,
                    "span_end": span_end,
                }
                for span_start, span_end in spans
            ],
        )


async def delete_rollups_before(conn: AsyncConnection, cutoff: datetime) -> None:
    """Delete the rollups of every hour that starts before ``cutoff``.

    Call it in the transaction that deletes the telemetry before ``cutoff``.
    The hour that contains ``cutoff`` goes too, because it loses some of its
    rows. The next query rebuilds it from the rows that remain.
    """
    kept_from = ceil_hour(cutoff.astimezone(UTC))
    await conn.execute(
        delete(telemetry_rollups).where(telemetry_rollups.c.hour < kept_from)
    )
    await conn.execute(
        delete(telemetry_rollup_spans).where(
            telemetry_rollup_spans.c.span_end <= kept_from
        )
    )
    await conn.execute(
        update(telemetry_rollup_spans)
        .where(telemetry_rollup_spans.c.span_start < kept_from)
        .values(span_start=kept_from)
    )


def sqlite_time(value: datetime) -> str:
    """Format a time the way SQLAlchemy stores DateTime on SQLite (naive UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
