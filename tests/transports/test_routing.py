"""Command routing between processes over the Redis bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from fleethub.bus.redis import RedisBus
from fleethub.live.redis import RedisLiveState
from fleethub.transports.registry import LinkRegistry
from fleethub.transports.routing import BusRouter
from servers import REDIS_URL


class RecordingLink:
    """A robot link that keeps the commands it is given (the transport boundary)."""

    def __init__(self, robot_id: str) -> None:
        self.robot_id = robot_id
        self.commands: list[dict[str, Any]] = []

    def send_command(self, payload: dict[str, Any]) -> None:
        self.commands.append(payload)

    async def close(self, code: int, reason: str) -> None:
        pass


@pytest.fixture
async def router_pair(
    redis_prefix: str,
) -> AsyncIterator[tuple[BusRouter, BusRouter]]:
    """Two routers, as in two processes, sharing one Redis prefix."""
    parts: list[Any] = []
    routers = []
    for node_id in ("node-a", "node-b"):
        bus = RedisBus(REDIS_URL, redis_prefix, node_id)
        await bus.start()
        live = RedisLiveState(REDIS_URL, redis_prefix)
        router = BusRouter(
            LinkRegistry(),
            bus=bus,
            live=live,
            node_id=node_id,
            reply_timeout_s=0.5,
        )
        router.start()
        parts += [router, bus, live]
        routers.append(router)
    yield routers[0], routers[1]
    for part in parts:
        await part.close()


async def test_command_reaches_other_node(
    router_pair: tuple[BusRouter, BusRouter],
) -> None:
    """A payload routed on one node is handed to the link on the other."""
    holder, sender = router_pair
    link = RecordingLink("r1")
    holder.links.register(link)
    await holder.live.set_online("r1", holder.node_id, datetime.now(UTC))
    delivered = await sender.deliver("r1", {"command_id": "c1", "type": "dock"})
    assert delivered is True
    assert [sent["command_id"] for sent in link.commands] == ["c1"]


async def test_silent_owner_not_delivered(
    router_pair: tuple[BusRouter, BusRouter],
) -> None:
    """A payload for a robot owned by a node that never replies is not delivered."""
    _, sender = router_pair
    await sender.live.set_online("r1", "node-gone", datetime.now(UTC))
    assert await sender.deliver("r1", {"command_id": "c1"}) is False


async def test_owner_without_link_not_delivered(
    router_pair: tuple[BusRouter, BusRouter],
) -> None:
    """An owner that lost the link replies so, and the sender reports it."""
    holder, sender = router_pair
    await holder.live.set_online("r1", holder.node_id, datetime.now(UTC))
    assert await sender.deliver("r1", {"command_id": "c1"}) is False


async def test_offline_robot_not_delivered(
    router_pair: tuple[BusRouter, BusRouter],
) -> None:
    """A robot no process holds is not delivered to, so its command stays queued."""
    _, sender = router_pair
    assert await sender.deliver("r-unknown", {"command_id": "c1"}) is False
