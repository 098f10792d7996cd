"""Analytics from stored telemetry, checked against values computed in the test.

The Intel Research Lab log is replayed into a real server and the analytics
endpoint is compared with figures this module computes from the raw gzip
lines, applying the replay policy documented in ``fleethub.replay.carmen``:

1. an ``ODOM`` line that repeats the previous scan's pose is dropped;
2. a scan with the same timestamp as the preceding ``ODOM`` line replaces it;
3. timestamps are raised to at least 1 ms after the previous one, so they
   increase strictly in file order.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.cli.server import RunningServer
from fleethub.replay.carmen import NO_RETURN_RANGE, intel_lab_log
from fleethub.replay.runner import replay
from fleethub.settings import Settings
from support import base_time, iso, make_settings, make_state

MAX_GAP_S = 60.0
OBSTACLE_M = 0.5
OBSTACLE_CLEAR_M = 0.6
MIN_TIME_STEP_S = 0.001
# SQLite computes time steps from julianday(), a double of about 2.46e6 days,
# so each step can be off by tens of microseconds. Allow 1 ms over a few steps.
HOURS_TOLERANCE = 0.001 / 3600.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        analytics_max_gap_s=MAX_GAP_S,
        obstacle_distance_m=OBSTACLE_M,
        obstacle_clear_distance_m=OBSTACLE_CLEAR_M,
    )


@dataclass
class LogPose:
    time: float
    pose: tuple[float, float, float]
    ranges: list[float] | None


def read_log_poses() -> list[LogPose]:
    """Parse the bundled gzip log into ODOM and FLASER poses, in file order."""
    poses: list[LogPose] = []
    with intel_lab_log().open("rb") as raw, gzip.open(raw, "rt") as lines:
        for line in lines:
            tokens = line.split()
            if tokens and tokens[0] == "ODOM":
                pose = (float(tokens[1]), float(tokens[2]), float(tokens[3]))
                poses.append(LogPose(float(tokens[7]), pose, None))
            elif tokens and tokens[0] == "FLASER":
                count = int(tokens[1])
                ranges = [float(token) for token in tokens[2 : 2 + count]]
                pose = tuple(float(token) for token in tokens[count + 5 : count + 8])
                poses.append(LogPose(float(tokens[count + 8]), pose, ranges))  # type: ignore[arg-type]
    return poses


def apply_replay_policy(poses: list[LogPose]) -> list[LogPose]:
    """Drop scan-pose repeats, let scans replace same-time ODOM lines, retime."""
    kept: list[LogPose] = []
    for pose in poses:
        previous = kept[-1] if kept else None
        is_scan = pose.ranges is not None
        if previous is not None and previous.ranges is not None and not is_scan:
            if pose.pose == previous.pose:
                continue
        if previous is not None and previous.ranges is None and is_scan:
            if pose.time == previous.time:
                kept.pop()
        kept.append(pose)

    for before, after in zip(kept, kept[1:], strict=False):
        after.time = max(after.time, before.time + MIN_TIME_STEP_S)
    return kept


def expected_obstacle_events(samples: list[LogPose]) -> int:
    """Count obstacle events: fire below 0.5 m, re-arm at 0.6 m or more."""
    active = False
    fired = 0
    for sample in samples:
        if sample.ranges is None:
            continue
        returns = [r for r in sample.ranges if 0.0 < r < NO_RETURN_RANGE]
        nearest = min(returns) if returns else math.inf
        if active and nearest >= OBSTACLE_CLEAR_M:
            active = False
        elif not active and nearest < OBSTACLE_M:
            active = True
            fired += 1
    return fired


async def test_intel_log_analytics_match_raw_log(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Replayed Intel log analytics match figures computed from the raw log."""
    samples = apply_replay_policy(read_log_poses())
    distance = sum(
        math.dist(a.pose[:2], b.pose[:2])
        for a, b in zip(samples, samples[1:], strict=False)
    )
    steps = [b.time - a.time for a, b in zip(samples, samples[1:], strict=False)]
    hours = sum(step for step in steps if step <= MAX_GAP_S) / 3600.0

    result = await replay(intel_lab_log(), server.ws_url, "intel-lab", speed=0)
    analytics = (await http.get("/api/robots/intel-lab/analytics")).json()
    await server.app.state.services.event_writer.wait_idle(10)
    events = await http.get(
        "/api/events",
        params={"robot_id": "intel-lab", "type": "obstacle_detected", "limit": 1000},
    )

    assert result.stats.sent == len(samples)
    assert result.stats.acked == len(samples)
    assert analytics["samples"] == len(samples)
    assert analytics["distance_m"] == pytest.approx(distance, rel=0.005)
    assert analytics["operating_hours"] == pytest.approx(hours, rel=0.01)
    assert analytics["charging_cycles"] == 0
    assert analytics["avg_battery"] is None
    assert 0.0 < analytics["avg_linear_velocity_mps"] < 0.5
    obstacle_events = events.json()["items"]
    assert len(obstacle_events) > 0
    assert len(obstacle_events) == expected_obstacle_events(samples)


T0 = base_time()

# (seconds after T0, x, y, linear velocity, battery, status). Hand-computed:
# distance 5 + 5 = 10 m; the 100 s gap before the fifth state exceeds
# MAX_GAP_S, so operating time is 4 x 10 s = 40 s; charging starts twice.
SYNTHETIC = [
    (0, 0.0, 0.0, 1.0, 50.0, "moving"),
    (10, 3.0, 4.0, -0.5, None, "charging"),
    (20, 3.0, 4.0, 0.0, 70.0, "charging"),
    (30, 6.0, 8.0, 0.5, 60.0, "moving"),
    (130, 6.0, 8.0, 0.0, 40.0, "charging"),
    (140, 6.0, 8.0, 0.0, None, "idle"),
]


async def store_synthetic(open_robot: Any) -> None:
    async with open_robot("synthetic") as robot:
        for seq, (offset, x, y, linear, battery, status) in enumerate(SYNTHETIC, 1):
            state = make_state(
                T0 + timedelta(seconds=offset),
                position={"x": x, "y": y},
                velocity={"linear": linear},
                battery=battery,
                status=status,
            )
            await robot.send_state(seq, state)
        await robot.wait_ack(len(SYNTHETIC))


async def test_synthetic_analytics_hand_computed(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """Analytics over a hand-made track equal the hand-computed values."""
    await store_synthetic(open_robot)
    analytics = (await http.get("/api/robots/synthetic/analytics")).json()

    assert analytics["samples"] == 6
    assert analytics["distance_m"] == pytest.approx(10.0)
    assert analytics["avg_linear_velocity_mps"] == pytest.approx(2.0 / 6.0)
    assert analytics["operating_hours"] == pytest.approx(
        40.0 / 3600.0, abs=HOURS_TOLERANCE
    )
    assert analytics["charging_cycles"] == 2
    assert analytics["avg_battery"] == pytest.approx(55.0)
    assert analytics["first_sample_at"] == iso(T0)
    assert analytics["last_sample_at"] == iso(T0 + timedelta(seconds=140))


async def test_synthetic_analytics_time_range(
    open_robot: Any, http: httpx.AsyncClient
) -> None:
    """A time range keeps samples with start <= ts < end and computes over them only."""
    await store_synthetic(open_robot)
    params = {
        "start": iso(T0 + timedelta(seconds=5)),
        "end": iso(T0 + timedelta(seconds=130)),
    }
    analytics = (
        await http.get("/api/robots/synthetic/analytics", params=params)
    ).json()

    assert analytics["samples"] == 3
    assert analytics["distance_m"] == pytest.approx(5.0)
    assert analytics["avg_linear_velocity_mps"] == pytest.approx(1.0 / 3.0)
    assert analytics["operating_hours"] == pytest.approx(
        20.0 / 3600.0, abs=HOURS_TOLERANCE
    )
    assert analytics["charging_cycles"] == 1
    assert analytics["avg_battery"] == pytest.approx(65.0)
    assert analytics["start"] == params["start"]
    assert analytics["end"] == params["end"]


async def test_analytics_empty_range(open_robot: Any, http: httpx.AsyncClient) -> None:
    """A range with no samples returns zeros and nulls, not an error."""
    await store_synthetic(open_robot)
    params = {
        "start": iso(T0 - timedelta(hours=2)),
        "end": iso(T0 - timedelta(hours=1)),
    }
    analytics = (
        await http.get("/api/robots/synthetic/analytics", params=params)
    ).json()

    assert analytics["samples"] == 0
    assert analytics["distance_m"] == 0.0
    assert analytics["operating_hours"] == 0.0
    assert analytics["charging_cycles"] == 0
    assert analytics["avg_linear_velocity_mps"] is None
    assert analytics["avg_battery"] is None
