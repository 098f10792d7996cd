"""Robot choice and progress tracking, without a server."""

from __future__ import annotations

from fleethub.live.base import RobotSnapshot
from fleethub.missions.assignment import choose_robot
from fleethub.missions.store import Mission, MissionStatus, Waypoint
from fleethub.missions.tracker import MissionTracker, TrackedMission
from fleethub.models import utcnow
from fleethub.protocol import RobotStatus
from tests.lifecycle_support import StateFeed


def mission_to(x: float, y: float, robot_id: str | None = None) -> Mission:
    now = utcnow()
    return Mission(
        mission_id="m1",
        status=MissionStatus.PENDING,
        waypoints=[Waypoint(x=x, y=y, tolerance=0.5)],
        priority=0,
        timeout_s=60,
        created_at=now,
        updated_at=now,
        requested_robot_id=robot_id,
    )


def snapshot(robot_id: str, x: float, **state: object) -> RobotSnapshot:
    feed = StateFeed(x=x)
    return RobotSnapshot(robot_id=robot_id, online=True, state=feed.next(**state))


def test_tie_goes_to_smaller_robot_id() -> None:
    """Two robots at the same distance resolve to the smaller id."""
    robots = [snapshot("b", 2.0), snapshot("a", -2.0)]

    assert choose_robot(mission_to(0, 0), robots, set(), 30.0) == "a"


def test_busy_and_requested_robots_are_respected() -> None:
    """A busy robot is skipped, and a requested robot is the only candidate."""
    robots = [snapshot("near", 1.0), snapshot("far", 9.0)]

    assert choose_robot(mission_to(0, 0), robots, {"near"}, 30.0) == "far"
    assert choose_robot(mission_to(0, 0, "far"), robots, set(), 30.0) == "far"
    assert choose_robot(mission_to(0, 0, "far"), robots, {"far"}, 30.0) is None


def test_battery_must_exceed_reserve() -> None:
    """A robot exactly at the reserve is not eligible."""
    robots = [snapshot("r1", 0.0, battery=30.0)]

    assert choose_robot(mission_to(0, 0), robots, set(), 30.0) is None


def test_tracker_skips_position_jumps() -> None:
    """Jumps longer than the tracker's step limit do not count as distance."""
    tracker = MissionTracker()
    tracked = TrackedMission(
        mission_id="m1",
        robot_id="r1",
        waypoints=[Waypoint(x=100, y=0, tolerance=0.5)],
        status=MissionStatus.ACTIVE,
    )
    tracker.add(tracked)
    feed = StateFeed()

    for x in (0.0, 1.0, 50.0, 51.0):
        tracker.observe(tracked, feed.next(x=x, status=RobotStatus.MOVING))

    assert tracked.distance_m == 2.0
    assert tracker.busy_robots() == {"r1"}
