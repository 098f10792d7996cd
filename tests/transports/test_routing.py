"""Command routing between processes over the Redis bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from fleethub.bus.redis import RedisBus
from fleethub.errors import RobotNotConnected
from fleethub.live.redis import RedisLiveState
from fleethub.transports.registry import LinkRegistry
from fleethub.transports.routing import RoutedCommandService
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


async def no_emit(_event: object) -> None:
    pass


@pytest.fixture
async def router_pair(
    redis_prefix: str,
) -> AsyncIterator[tuple[RoutedCommandService, RoutedCommandService]]:
    """Two routers, as in two processes, sharing one Redis prefix."""
    parts: list[Any] = []
    routers = []
    for node_id in ("node-a", "node-b"):
        bus = RedisBus(REDIS_URL, redis_prefix, node_id)
        await bus.start()
        live = RedisLiveState(REDIS_URL, redis_prefix)
        router = RoutedCommandService(
            LinkRegistry(),
            no_emit,
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
    router_pair: tuple[RoutedCommandService, RoutedCommandService],
) -> None:
    """A command sent on one node is delivered to the link on the other."""
    holder, sender = router_pair
    link = RecordingLink("r1")
    holder.links.register(link)
    await holder.live.set_online("r1", holder.node_id, datetime.now(UTC))
    command = await sender.send("r1", "dock", {"at": "A"})
    assert [sent["command_id"] for sent in link.commands] == [command["command_id"]]
    assert command["status"] == "sent"


async def test_silent_owner_times_out(
    router_pair: tuple[RoutedCommandService, RoutedCommandService],
) -> None:
    """A command for a robot owned by a node that never replies fails with 409."""
    _, sender = router_pair
    await sender.live.set_online("r1", "node-gone", datetime.now(UTC))
    with pytest.raises(RobotNotConnected) as caught:
        await sender.send("r1", "dock", {})
    assert "node-gone" in caught.value.message


async def test_owner_lost_link_conflicts(
    router_pair: tuple[RoutedCommandService, RoutedCommandService],
) -> None:
    """An owner without the link replies 'not connected'; the sender raises it."""
    holder, sender = router_pair
    await holder.live.set_online("r1", holder.node_id, datetime.now(UTC))
    with pytest.raises(RobotNotConnected) as caught:
        await sender.send("r1", "dock", {})
    assert caught.value.details["robot_id"] == "r1"
