"""Analytics from hourly rollups equal one pass over the raw rows, on both backends.

The expected figures are computed in Python from the rows the test wrote,
with exact time steps, so every check also covers the SQL of the raw edges.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command as alembic_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from fleethub.models import Analytics, TelemetryRow
from fleethub.storage import migrate
from fleethub.storage.rollups import floor_hour
from fleethub.storage.schema import telemetry_rollup_spans, telemetry_rollups
from fleethub.storage.sql import SqlStorage, create_engine
from support import wait_for

MAX_GAP_S = 60.0
T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def row(
    robot_id: str,
    ts: datetime,
    x: float,
    y: float = 0.0,
    *,
    status: str = "moving",
    linear: float = 0.5,
    battery: float | None = 80.0,
) -> TelemetryRow:
    return TelemetryRow(
        robot_id, ts, x, y, 0.0, 0.0, 0.0, 0.0, linear, 0.0, battery, status,
        None, None,
    )  # fmt: skip


def expected_analytics(
    rows: Sequence[TelemetryRow],
    start: datetime | None,
    end: datetime | None,
    max_gap_s: float = MAX_GAP_S,
) -> Analytics:
    """Compute the analytics of ``[start, end)`` in one pass over ``rows``."""
    kept = [
        r
        for r in rows
        if (start is None or r.ts >= start) and (end is None or r.ts < end)
    ]
    distance = 0.0
    operating_us = 0
    charging = 0
    previous: TelemetryRow | None = None
    for current in kept:
        if previous is not None:
            distance += math.hypot(current.x - previous.x, current.y - previous.y)
            step_us = (current.ts - previous.ts) // timedelta(microseconds=1)
            if step_us <= max_gap_s * 1_000_000:
                operating_us += step_us
        previous_status = previous.status if previous is not None else None
        if current.status == "charging" and previous_status != "charging":
            charging += 1
        previous = current
    batteries = [r.battery for r in kept if r.battery is not None]
    return Analytics(
        robot_id=rows[0].robot_id if rows else "",
        start=start,
        end=end,
        samples=len(kept),
        distance_m=distance,
        avg_linear_velocity_mps=(
            sum(abs(r.linear) for r in kept) / len(kept) if kept else None
        ),
        operating_hours=operating_us / 3_600_000_000,
        charging_cycles=charging,
        avg_battery=sum(batteries) / len(batteries) if batteries else None,
        first_sample_at=kept[0].ts if kept else None,
        last_sample_at=kept[-1].ts if kept else None,
    )


def assert_same(actual: Analytics, expected: Analytics) -> None:
    assert actual.samples == expected.samples
    assert actual.charging_cycles == expected.charging_cycles
    assert actual.first_sample_at == expected.first_sample_at
    assert actual.last_sample_at == expected.last_sample_at
    assert actual.start == expected.start
    assert actual.end == expected.end
    assert actual.distance_m == pytest.approx(expected.distance_m, rel=1e-9, abs=1e-9)
    # Time steps are whole microseconds on both backends, so the sum is exact.
    assert actual.operating_hours == pytest.approx(
        expected.operating_hours, rel=1e-12, abs=1e-15
    )
    if expected.avg_linear_velocity_mps is None:
        assert actual.avg_linear_velocity_mps is None
    else:
        assert actual.avg_linear_velocity_mps == pytest.approx(
            expected.avg_linear_velocity_mps, rel=1e-9
        )
    if expected.avg_battery is None:
        assert actual.avg_battery is None
    else:
        assert actual.avg_battery == pytest.approx(expected.avg_battery, rel=1e-9)


async def rollup_hours(storage: SqlStorage, robot_id: str) -> list[datetime]:
    query = (
        select(telemetry_rollups.c.hour)
        .where(telemetry_rollups.c.robot_id == robot_id)
        .order_by(telemetry_rollups.c.hour)
    )
    async with storage.engine.connect() as conn:
        hours = (await conn.execute(query)).scalars()
        return [
            h.replace(tzinfo=UTC) if h.tzinfo is None else h.astimezone(UTC)
            for h in hours
        ]


def hand_made_rows(robot_id: str) -> list[TelemetryRow]:
    """A track over four hours with pairs that straddle hour boundaries.

    A charging run crosses 09:00, the step into 10:00 is exactly the gap
    limit, a 70 s gap crosses 11:00 and a sample sits exactly on 11:00:10.
    """
    seconds = [
        (0, "moving"), (1800.5, "moving"), (3590, "charging"),
        (3610, "charging"), (3700, "moving"), (7140, "moving"),
        (7200, "charging"), (7260.000001, "idle"), (10770, "moving"),
        (10840, "charging"), (10810 + 0.25, "charging"), (14000, "moving"),
    ]  # fmt: skip
    seconds.sort()
    return [
        row(
            robot_id,
            T0 + timedelta(seconds=offset),
            x=offset / 100,
            y=(index % 3) * 1.5,
            status=status,
            linear=-0.3 if index % 2 else 0.7,
            battery=None if index % 4 == 1 else 90.0 - index,
        )
        for index, (offset, status) in enumerate(seconds)
    ]


RANGES = [
    (None, None),
    (T0, T0 + 4 * HOUR),
    (T0 + timedelta(minutes=30), None),
    (None, T0 + timedelta(hours=2, minutes=15)),
    (T0 + timedelta(minutes=59, seconds=55), T0 + timedelta(hours=3, seconds=15)),
    (T0 + HOUR, T0 + 3 * HOUR),
    (T0 + timedelta(hours=2), T0 + timedelta(hours=2, seconds=1)),
    (T0 - 2 * HOUR, T0 - HOUR),
    (T0 + 10 * HOUR, None),
    (T0 + timedelta(seconds=3700), T0 + timedelta(seconds=3700.000001)),
    (T0 + 2 * HOUR, T0 + 2 * HOUR),
    (T0 + 3 * HOUR, T0 + HOUR),
    (datetime(9999, 12, 31, 23, 30, tzinfo=UTC), None),
    (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    (None, datetime(1, 1, 1, 0, 30, tzinfo=UTC)),
]


async def test_hand_made_ranges_match_raw(storage: SqlStorage) -> None:
    """Every range, aligned or not, empty or one row, matches the raw figures."""
    rows = hand_made_rows("r1")
    await storage.write_telemetry(rows)
    for start, end in [*RANGES, *RANGES]:
        actual = await storage.analytics("r1", start, end, MAX_GAP_S)
        assert_same(actual, expected_analytics(rows, start, end))
    assert await rollup_hours(storage, "r1") != []


async def test_rollups_only_cover_final_hours(storage: SqlStorage) -> None:
    """No rollup exists for the hour of the newest row or any later one."""
    rows = hand_made_rows("r1")
    await storage.write_telemetry(rows)
    await storage.analytics("r1", None, None, MAX_GAP_S)

    hours = await rollup_hours(storage, "r1")
    assert hours
    assert max(hours) < floor_hour(rows[-1].ts)


async def test_rows_after_rollup_are_counted(storage: SqlStorage) -> None:
    """Rows written after a query, in the newest hour and later, are counted."""
    rows = hand_made_rows("r1")
    await storage.write_telemetry(rows)
    before = await storage.analytics("r1", None, None, MAX_GAP_S)
    last = rows[-1].ts
    later = [
        row("r1", last + timedelta(seconds=5), x=200.0, status="charging"),
        row("r1", floor_hour(last) + HOUR, x=210.0, status="charging"),
        row("r1", floor_hour(last) + 3 * HOUR + timedelta(seconds=1), x=0.0),
        row("r1", floor_hour(last) + 3 * HOUR + timedelta(seconds=2), x=1.0),
    ]
    await storage.write_telemetry(later)
    everything = rows + later

    after = await storage.analytics("r1", None, None, MAX_GAP_S)
    ranged = await storage.analytics("r1", T0 + timedelta(minutes=7), None, MAX_GAP_S)

    assert before.samples == len(rows)
    assert_same(after, expected_analytics(everything, None, None))
    assert_same(ranged, expected_analytics(everything, T0 + timedelta(minutes=7), None))
    assert max(await rollup_hours(storage, "r1")) < floor_hour(later[-1].ts)


async def test_single_row_and_unknown_robot(storage: SqlStorage) -> None:
    """One stored row gives one sample, and a robot without rows gives zeros."""
    rows = [row("r1", T0 + timedelta(minutes=5), x=1.0, status="charging")]
    await storage.write_telemetry(rows)

    single = await storage.analytics("r1", None, None, MAX_GAP_S)
    unknown = await storage.analytics("nobody", None, None, MAX_GAP_S)

    assert_same(single, expected_analytics(rows, None, None))
    assert unknown.samples == 0
    assert unknown.distance_m == 0.0
    assert unknown.operating_hours == 0.0
    assert unknown.charging_cycles == 0
    assert unknown.avg_battery is None
    assert unknown.first_sample_at is None


async def test_gap_settings_roll_up_separately(storage: SqlStorage) -> None:
    """Each gap setting gets its own rollups, so operating time follows it."""
    rows = hand_made_rows("r1")
    await storage.write_telemetry(rows)
    for gap in (60.0, 5000.0, 60.0, 0.5):
        actual = await storage.analytics("r1", None, None, gap)
        assert_same(actual, expected_analytics(rows, None, None, gap))


async def test_robots_roll_up_separately(storage: SqlStorage) -> None:
    """Rollups of one robot never leak into another's analytics."""
    first = hand_made_rows("r1")
    second = [r._replace(robot_id="r2", x=r.x * 2) for r in first[::2]]
    await storage.write_telemetry(first + second)
    for robot_id, rows in (("r1", first), ("r2", second), ("r1", first)):
        actual = await storage.analytics(robot_id, None, None, MAX_GAP_S)
        assert_same(actual, expected_analytics(rows, None, None))


async def test_concurrent_first_queries_agree(storage: SqlStorage) -> None:
    """Several first queries at once build the rollups once and agree."""
    rows = hand_made_rows("r1")
    await storage.write_telemetry(rows)
    results = await asyncio.gather(
        *(storage.analytics("r1", None, None, MAX_GAP_S) for _ in range(4))
    )
    for result in results:
        assert_same(result, expected_analytics(rows, None, None))
    async with storage.engine.connect() as conn:
        spans = await conn.scalar(
            select(func.count()).select_from(telemetry_rollup_spans)
        )
    assert spans == 1


async def test_background_task_rolls_up_final_hours(storage: SqlStorage) -> None:
    """The background task rolls up every final hour before any query."""
    rows = hand_made_rows("r1")
    await storage.ensure_robot("r1", T0)
    await storage.write_telemetry(rows)
    expected_hours = sorted(
        {floor_hour(r.ts) for r in rows if floor_hour(r.ts) < floor_hour(rows[-1].ts)}
    )
    task = asyncio.create_task(
        storage.rollups.run(storage.robot_ids, MAX_GAP_S, interval_s=0.01)
    )
    try:
        await wait_for(
            lambda: rollup_hours_are(storage, "r1", expected_hours), timeout_s=30
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    result = await storage.analytics("r1", None, None, MAX_GAP_S)

    assert await rollup_hours(storage, "r1") == expected_hours
    assert_same(result, expected_analytics(rows, None, None))


async def test_background_task_survives_failed_pass(storage: SqlStorage) -> None:
    """A pass that fails unexpectedly is logged and the next pass still runs."""
    rows = hand_made_rows("r1")
    await storage.ensure_robot("r1", T0)
    await storage.write_telemetry(rows)
    expected_hours = sorted(
        {floor_hour(r.ts) for r in rows if floor_hour(r.ts) < floor_hour(rows[-1].ts)}
    )
    calls = 0

    async def robot_ids_failing_once() -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("robot list unavailable")
        return await storage.robot_ids()

    task = asyncio.create_task(
        storage.rollups.run(robot_ids_failing_once, MAX_GAP_S, interval_s=0.01)
    )
    try:
        await wait_for(
            lambda: rollup_hours_are(storage, "r1", expected_hours), timeout_s=30
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert calls >= 2
    assert await rollup_hours(storage, "r1") == expected_hours


async def rollup_hours_are(
    storage: SqlStorage, robot_id: str, hours: list[datetime]
) -> bool:
    return await rollup_hours(storage, robot_id) == hours


# Steps in microseconds: tiny, around the gap limit, and hours long.
STEPS_US = st.one_of(
    st.integers(1, 5_000_000),
    st.sampled_from([59_999_999, 60_000_000, 60_000_001]),
    st.integers(60_000_000, 3 * 3_600_000_000),
)
ROWS = st.lists(
    st.tuples(
        STEPS_US,
        st.floats(-1e3, 1e3, allow_nan=False),
        st.floats(-1e3, 1e3, allow_nan=False),
        st.sampled_from(["moving", "charging", "idle"]),
        st.one_of(st.none(), st.floats(0.0, 100.0, allow_nan=False)),
    ),
    min_size=0,
    max_size=60,
)
# Range bounds as microseconds after T0: anywhere, or on an hour.
BOUNDS = st.one_of(
    st.none(),
    st.integers(-3_600_000_000, 40 * 3_600_000_000),
    st.integers(-1, 40).map(lambda hours: hours * 3_600_000_000),
)


def build_rows(robot_id: str, start_us: int, drawn: list[tuple]) -> list[TelemetryRow]:
    rows = []
    offset_us = start_us
    for step_us, x, y, status, battery in drawn:
        offset_us += step_us
        rows.append(
            row(
                robot_id,
                T0 + timedelta(microseconds=offset_us),
                x,
                y,
                status=status,
                linear=x / 100,
                battery=battery,
            )
        )
    return rows


def to_time(offset_us: int | None) -> datetime | None:
    return None if offset_us is None else T0 + timedelta(microseconds=offset_us)


async def check_random_case(
    url: str, rows: list[TelemetryRow], ranges: list[tuple[int | None, int | None]]
) -> None:
    storage = SqlStorage(create_engine(url))
    try:
        robot_id = rows[0].robot_id if rows else "empty"
        await storage.write_telemetry(rows)
        for start_us, end_us in ranges:
            start, end = to_time(start_us), to_time(end_us)
            actual = await storage.analytics(robot_id, start, end, MAX_GAP_S)
            assert_same(actual, expected_analytics(rows, start, end))
    finally:
        await storage.close()


async def migrate_database(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def test_random_tracks_match_raw(database_url: str) -> None:
    """Random tracks and ranges give the raw figures, queried in any order."""
    asyncio.run(migrate_database(database_url))

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        drawn=ROWS,
        start_us=st.integers(0, 3_600_000_000),
        ranges=st.lists(st.tuples(BOUNDS, BOUNDS), min_size=1, max_size=6),
    )
    def check(drawn: list[tuple], start_us: int, ranges: list[tuple]) -> None:
        rows = build_rows(uuid.uuid4().hex[:16], start_us, drawn)
        asyncio.run(check_random_case(database_url, rows, ranges))

    check()


async def test_migration_adds_rollups_to_old_schema(database_url: str) -> None:
    """Upgrading a 0004 database with telemetry serves analytics from rollups."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: alembic_command.upgrade(migrate._config(sync), "0004")
        )
    storage = SqlStorage(engine)
    rows = hand_made_rows("r1")
    await storage.write_telemetry(rows)

    await migrate.upgrade(engine)
    upgraded = await migrate.current_revision(engine)
    result = await storage.analytics("r1", None, None, MAX_GAP_S)
    hours = await rollup_hours(storage, "r1")
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: alembic_command.downgrade(migrate._config(sync), "0004")
        )
    async with engine.connect() as conn:
        table_names = await conn.run_sync(
            lambda sync: sync.dialect.get_table_names(sync)
        )
        telemetry_rows = await conn.scalar(text("SELECT count(*) FROM telemetry"))
    await storage.close()

    assert upgraded == "0005"
    assert_same(result, expected_analytics(rows, None, None))
    assert hours
    assert "telemetry_rollups" not in table_names
    assert "telemetry_rollup_spans" not in table_names
    assert telemetry_rows == len(rows)
