"""The storage contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleethub.models import Event, Severity, TelemetryRow
from fleethub.storage.sql import SqlStorage

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def row(robot_id: str, seconds: float, **fields: object) -> TelemetryRow:
    values: dict[str, object] = {
        "robot_id": robot_id,
        "ts": T0 + timedelta(seconds=seconds),
        "x": seconds,
        "y": 0.0,
        "z": 0.0,
        "roll": 0.0,
        "pitch": 0.0,
        "yaw": 0.5,
        "linear": 1.0,
        "angular": 0.0,
        "battery": 80.0,
        "status": "moving",
        "min_range": 1.5,
        "lidar_ranges": [1.5, 2.0, 30.0],
    }
    values.update(fields)
    return TelemetryRow(**values)  # type: ignore[arg-type]


async def test_ping_succeeds(storage: SqlStorage) -> None:
    """A reachable database responds to a ping."""
    await storage.ping()


async def test_ensure_robot_is_idempotent(storage: SqlStorage) -> None:
    """Ensuring a robot twice stores it once, and ids come back sorted."""
    await storage.ensure_robot("r2", T0)
    await storage.ensure_robot("r1", T0)
    await storage.ensure_robot("r2", T0 + timedelta(seconds=5))
    assert await storage.robot_ids() == ["r1", "r2"]


async def test_telemetry_round_trip(storage: SqlStorage) -> None:
    """Written rows read back equal, with aware UTC times and lidar ranges."""
    rows = [row("r1", 0), row("r1", 1, battery=None, lidar_ranges=None, min_range=None)]
    await storage.write_telemetry(rows)
    stored = await storage.telemetry("r1", None, None, 10)
    assert stored == rows
    assert stored[0].ts.tzinfo is not None
    assert stored[0].ts.utcoffset() == timedelta(0)


async def test_write_telemetry_empty_batch(storage: SqlStorage) -> None:
    """An empty batch writes nothing and does not fail."""
    await storage.write_telemetry([])
    assert await storage.count_telemetry() == 0


async def test_telemetry_range_limit_cursor(storage: SqlStorage) -> None:
    """A range is half-open, ordered by time, limited, and resumes after the cursor."""
    await storage.write_telemetry([row("r1", s) for s in (3, 0, 2, 1, 4)])
    await storage.write_telemetry([row("r2", 1)])
    start, end = T0 + timedelta(seconds=1), T0 + timedelta(seconds=4)
    first = await storage.telemetry("r1", start, end, 2)
    assert [r.x for r in first] == [1.0, 2.0]
    rest = await storage.telemetry("r1", start, end, 2, after=first[-1].ts)
    assert [r.x for r in rest] == [3.0]


async def test_count_and_last_time(storage: SqlStorage) -> None:
    """Counts are per robot or total; the last time is the newest row's."""
    await storage.write_telemetry([row("r1", 0), row("r1", 7), row("r2", 3)])
    assert await storage.count_telemetry("r1") == 2
    assert await storage.count_telemetry() == 3
    assert await storage.last_telemetry_time("r1") == T0 + timedelta(seconds=7)
    assert await storage.last_telemetry_time("missing") is None
    latest = await storage.latest_telemetry("r1")
    assert latest is not None
    assert latest.ts == T0 + timedelta(seconds=7)
    assert await storage.latest_telemetry("missing") is None


async def test_telemetry_across_days(storage: SqlStorage) -> None:
    """Rows far apart in time (different daily partitions) all read back."""
    far = [row("r1", 0), row("r1", 86_400 * 2), row("r1", -86_400 * 30)]
    await storage.write_telemetry(far)
    stored = await storage.telemetry("r1", None, None, 10)
    assert [r.ts for r in stored] == sorted(r.ts for r in far)


async def test_analytics_aggregates(storage: SqlStorage) -> None:
    """Analytics sums distance, skips long gaps and counts charging cycles."""
    rows = [
        row("r1", 0, x=0.0, status="moving"),
        row("r1", 10, x=3.0, y=4.0, status="charging"),
        row("r1", 20, x=3.0, y=4.0, status="moving"),
        row("r1", 1000, x=3.0, y=4.0, status="charging"),
    ]
    await storage.write_telemetry(rows)
    result = await storage.analytics("r1", None, None, max_gap_s=60)
    assert result.samples == 4
    assert result.distance_m == pytest.approx(5.0)
    # SQLite computes times from julianday(), good to about a millisecond.
    assert result.operating_hours == pytest.approx(20 / 3600, rel=1e-5)
    assert result.charging_cycles == 2
    assert result.first_sample_at == T0
    assert result.last_sample_at == T0 + timedelta(seconds=1000)


async def test_events_filter_and_page(storage: SqlStorage) -> None:
    """Events filter by robot and type, come newest first and page by id."""
    items = [
        Event(
            type="battery_low", robot_id="r1", severity=Severity.WARNING, timestamp=T0
        ),
        Event(type="robot_connected", robot_id="r1", timestamp=T0),
        Event(type="battery_low", robot_id="r2", data={"battery": 10.0}, timestamp=T0),
    ]
    await storage.write_events(items)
    newest = await storage.events(limit=2)
    assert [e.event_id for e in newest] == [items[2].event_id, items[1].event_id]
    older = await storage.events(limit=2, before_id=newest[-1].id)
    assert [e.event_id for e in older] == [items[0].event_id]
    battery = await storage.events(event_type="battery_low", robot_id="r2")
    assert battery[0].data == {"battery": 10.0}
    assert battery[0].timestamp == T0
    assert await storage.event_counts() == {"battery_low": 2, "robot_connected": 1}
