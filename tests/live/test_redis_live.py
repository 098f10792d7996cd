"""Redis live state shared between processes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fleethub.live.redis import RedisLiveState
from fleethub.protocol import Orientation, Position, RobotState, RobotStatus, Velocity
from servers import REDIS_URL

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
STATE = RobotState(
    timestamp=T0,
    position=Position(x=1.0, y=2.0),
    orientation=Orientation(yaw=0.1),
    velocity=Velocity(linear=0.2),
    status=RobotStatus.IDLE,
)


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds, failing after 5 s."""
    async with asyncio.timeout(5):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.02)


async def test_other_process_sees_state(redis_prefix: str) -> None:
    """A state written by one process is readable from another after the flush."""
    writer = RedisLiveState(REDIS_URL, redis_prefix, flush_interval_s=0.02)
    reader = RedisLiveState(REDIS_URL, redis_prefix)
    writer.start()
    try:
        await writer.set_online("r1", "node-a", T0)
        await writer.update("r1", STATE, T0)

        async def visible() -> bool:
            snapshot = await reader.get("r1")
            return snapshot is not None and snapshot.state == STATE

        await wait_until(visible)
        snapshots = await reader.all()
        assert [(s.robot_id, s.online, s.node_id) for s in snapshots] == [
            ("r1", True, "node-a")
        ]
    finally:
        await writer.close()
        await reader.close()


async def test_dead_process_robots_go_offline(redis_prefix: str) -> None:
    """Presence expires when the holding process stops renewing it."""
    holder = RedisLiveState(REDIS_URL, redis_prefix, presence_ttl_s=0.3)
    observer = RedisLiveState(REDIS_URL, redis_prefix)
    await holder.set_online("r1", "node-a", T0)
    # The holder never starts its flush task, like a process that died.
    await holder._client.aclose()

    async def offline() -> bool:
        snapshot = await observer.get("r1")
        return snapshot is not None and not snapshot.online

    try:
        await wait_until(offline)
    finally:
        await observer.close()


async def test_presence_renewed_while_held(redis_prefix: str) -> None:
    """A live holder keeps its robots online past the presence expiry."""
    holder = RedisLiveState(
        REDIS_URL, redis_prefix, presence_ttl_s=0.3, flush_interval_s=0.02
    )
    holder.start()
    try:
        await holder.set_online("r1", "node-a", T0)
        renewals = holder._last_renewal

        async def renewed_twice() -> bool:
            return holder._last_renewal > renewals + 0.2

        await wait_until(renewed_twice)
        snapshot = await holder.get("r1")
        assert snapshot is not None
        assert snapshot.online
    finally:
        await holder.close()


async def test_renewal_keeps_takeover(redis_prefix: str) -> None:
    """A process that lost a robot to another does not take it back on renewal."""
    old = RedisLiveState(REDIS_URL, redis_prefix)
    new = RedisLiveState(REDIS_URL, redis_prefix)
    try:
        await old.set_online("r1", "node-a", T0)
        await new.set_online("r1", "node-b", T0)
        old._last_renewal = float("-inf")  # make the renewal due now
        await old.flush()
        snapshot = await new.get("r1")
        assert snapshot is not None
        assert snapshot.online
        assert snapshot.node_id == "node-b"
    finally:
        await old.close()
        await new.close()
