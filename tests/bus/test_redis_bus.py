"""The Redis bus between two processes."""

from __future__ import annotations

import asyncio

from fleethub.bus.base import STATES
from fleethub.bus.redis import RedisBus
from servers import REDIS_URL


async def test_message_reaches_other_node(redis_prefix: str) -> None:
    """A message published on one node reaches the other's subscriber exactly once."""
    first = RedisBus(REDIS_URL, redis_prefix, node_id="a")
    second = RedisBus(REDIS_URL, redis_prefix, node_id="b")
    await first.start()
    await second.start()
    try:
        local = first.subscribe(frozenset({STATES}))
        remote = second.subscribe(frozenset({STATES}))
        await first.publish(STATES, b'{"n":1}')
        await first.publish(STATES, b'{"n":2}')
        assert await asyncio.wait_for(remote.get(), 5) == (STATES, b'{"n":1}')
        assert await asyncio.wait_for(remote.get(), 5) == (STATES, b'{"n":2}')
        # The echo from Redis is skipped, so the publisher's own subscriber
        # gets each message once; a third message marks the end.
        await second.publish(STATES, b'{"n":3}')
        assert await asyncio.wait_for(local.get(), 5) == (STATES, b'{"n":1}')
        assert await asyncio.wait_for(local.get(), 5) == (STATES, b'{"n":2}')
        assert await asyncio.wait_for(local.get(), 5) == (STATES, b'{"n":3}')
    finally:
        await first.close()
        await second.close()


async def test_prefixes_isolate(redis_prefix: str) -> None:
    """Buses under different prefixes do not see each other's messages."""
    first = RedisBus(REDIS_URL, redis_prefix + "one:", node_id="a")
    second = RedisBus(REDIS_URL, redis_prefix + "two:", node_id="b")
    third = RedisBus(REDIS_URL, redis_prefix + "two:", node_id="c")
    for bus in (first, second, third):
        await bus.start()
    try:
        isolated = second.subscribe(frozenset({STATES}))
        await first.publish(STATES, b'{"from":"one"}')
        await third.publish(STATES, b'{"from":"two"}')
        assert await asyncio.wait_for(isolated.get(), 5) == (STATES, b'{"from":"two"}')
        assert len(isolated) == 0
    finally:
        for bus in (first, second, third):
            await bus.close()
