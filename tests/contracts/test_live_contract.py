"""The live-state contract, in memory and in Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleethub.live.base import LiveState
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def state(seconds: float, battery: float = 90.0) -> RobotState:
    return RobotState(
        timestamp=T0 + timedelta(seconds=seconds),
        position=Position(x=seconds, y=1.0),
        orientation=Orientation(yaw=0.25),
        velocity=Velocity(linear=0.5),
        status=RobotStatus.MOVING,
        battery=battery,
    )


async def test_unknown_robot_is_none(live: LiveState) -> None:
    """A robot never seen has no snapshot."""
    assert await live.get("ghost") is None


async def test_online_then_update(live: LiveState) -> None:
    """A connected robot's snapshot has its node, newest state and seen time."""
    await live.set_online("r1", "node-a", T0)
    await live.update("r1", state(1), T0 + timedelta(seconds=1))
    await live.update("r1", state(2, battery=80.0), T0 + timedelta(seconds=2))
    snapshot = await live.get("r1")
    assert snapshot is not None
    assert snapshot.online is True
    assert snapshot.node_id == "node-a"
    assert snapshot.state == state(2, battery=80.0)
    assert snapshot.last_seen == T0 + timedelta(seconds=2)


async def test_offline_keeps_last_state(live: LiveState) -> None:
    """Going offline clears the node but keeps the last state."""
    await live.set_online("r1", "node-a", T0)
    await live.update("r1", state(1), T0)
    await live.set_offline("r1", "node-a")
    snapshot = await live.get("r1")
    assert snapshot is not None
    assert snapshot.online is False
    assert snapshot.node_id is None
    assert snapshot.state == state(1)


async def test_offline_from_old_node_ignored(live: LiveState) -> None:
    """A process that lost the robot to another cannot mark it offline."""
    await live.set_online("r1", "node-a", T0)
    await live.set_online("r1", "node-b", T0 + timedelta(seconds=1))
    await live.set_offline("r1", "node-a")
    snapshot = await live.get("r1")
    assert snapshot is not None
    assert snapshot.online is True
    assert snapshot.node_id == "node-b"


async def test_all_sorted_by_id(live: LiveState) -> None:
    """Every seen robot is listed once, sorted by id."""
    for robot_id in ("r3", "r1", "r2"):
        await live.set_online(robot_id, "node-a", T0)
        await live.update(robot_id, state(1), T0)
    await live.set_offline("r2", "node-a")
    snapshots = await live.all()
    assert [s.robot_id for s in snapshots] == ["r1", "r2", "r3"]
    assert [s.online for s in snapshots] == [True, False, True]
