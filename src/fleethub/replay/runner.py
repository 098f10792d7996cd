"""Stream a CARMEN log to a fleethub server as one robot.

Timestamps keep the log's own clock: the log's time zero is anchored so that
its last sample falls at the moment the replay starts, which puts every state
in the past (never rejected as "in the future") and keeps speeds, durations
and operating hours exactly as recorded. ``speed`` only sets how fast the
samples are sent; ``speed=0`` sends as fast as the server acknowledges.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleethub.client.robot import ClientStats, RobotClient
from fleethub.models import utcnow
from fleethub.protocol import (
    Lidar,
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    Velocity,
)
from fleethub.replay.carmen import (
    NO_RETURN_RANGE,
    LogSource,
    ReplaySample,
    read_samples,
)

# Below this speed the replayed robot reports "idle" rather than "moving".
MOVING_THRESHOLD_MPS = 0.02
# Scans in the bundled log span 180 degrees in 1 degree steps, right to left.
SCAN_ANGLE_MIN = -math.pi / 2
SCAN_ANGLE_INCREMENT = math.pi / 180


@dataclass
class ReplayResult:
    """Counts of what a replay sent and how the server handled it."""

    robot_id: str
    samples: int
    stats: ClientStats
    wall_seconds: float


def sample_to_state(sample: ReplaySample, anchor_epoch: float) -> RobotState:
    """Turn a log sample into a robot state stamped on the anchored clock."""
    lidar = None
    if sample.ranges is not None:
        lidar = Lidar(
            ranges=list(sample.ranges),
            range_max=NO_RETURN_RANGE,
            angle_min=SCAN_ANGLE_MIN,
            angle_increment=SCAN_ANGLE_INCREMENT,
        )
    moving = abs(sample.linear) > MOVING_THRESHOLD_MPS
    return RobotState(
        timestamp=_at(anchor_epoch + sample.log_time),
        position=Position(x=sample.x, y=sample.y),
        orientation=Orientation(yaw=sample.theta),
        velocity=Velocity(linear=sample.linear, angular=sample.angular),
        status=RobotStatus.MOVING if moving else RobotStatus.IDLE,
        lidar=lidar,
    )


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def replay(
    source: LogSource,
    url: str,
    robot_id: str,
    *,
    speed: float,
    on_progress: Callable[[int, int], None] | None = None,
    headers: dict[str, str] | None = None,
    flush_timeout_s: float = 120.0,
) -> ReplayResult:
    """Send every sample of ``source`` and wait until all are acknowledged."""
    samples = list(read_samples(source))
    if not samples:
        raise ValueError("The log has no poses to replay.")
    first, last = samples[0].log_time, samples[-1].log_time
    anchor_epoch = (utcnow() - timedelta(seconds=last)).timestamp()
    started = time.monotonic()
    async with RobotClient(url, robot_id, headers=headers) as client:
        for index, sample in enumerate(samples, start=1):
            if speed > 0:
                delay = (sample.log_time - first) / speed - (time.monotonic() - started)
                if delay > 0.001:
                    await asyncio.sleep(delay)
            await client.send_state(sample_to_state(sample, anchor_epoch))
            if on_progress is not None:
                on_progress(index, len(samples))
        await client.flush(flush_timeout_s)
        return ReplayResult(
            robot_id, len(samples), client.stats, time.monotonic() - started
        )
