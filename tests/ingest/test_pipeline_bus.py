"""States reach the bus only while someone listens, and storage gets them always."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import msgspec
import pytest

from fleethub.bus.base import STATES
from fleethub.bus.memory import MemoryBus
from fleethub.protocol import StateUpdate, decode_robot_frame
from fleethub.services import Services, build_services
from fleethub.settings import Settings
from support import base_time, make_state, state_frame, wait_for


class CountingBus(MemoryBus):
    """An in-process bus that records the channel of every publish call."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[str] = []

    async def publish(self, channel: str, message: bytes) -> None:
        self.published.append(channel)
        await super().publish(channel, message)


class Link:
    """The part of a robot connection the pipeline uses: id and acks."""

    def __init__(self, robot_id: str) -> None:
        self.robot_id = robot_id
        self.acked = 0

    def acknowledge(self, seq: int) -> None:
        self.acked = max(self.acked, seq)

    def reject_stored(self, seq: int, code: str, message: str) -> None:
        raise AssertionError(f"state {seq} not stored: {code} {message}")


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    services = await build_services(settings, migrate_schema=True)
    yield services
    await services.close()


def update(seq: int, start: datetime) -> StateUpdate:
    state = make_state(start + timedelta(seconds=seq))
    frame = decode_robot_frame(json.dumps(state_frame(seq, state)))
    assert isinstance(frame, StateUpdate)
    return frame


async def test_states_published_only_while_subscribed(services: Services) -> None:
    """No subscriber: no bus message. A subscriber gets the states after it came."""
    pipeline = services.pipeline
    bus = pipeline.bus = CountingBus()
    link = Link("r1")
    start = base_time()
    await pipeline.open_robot("r1")

    await pipeline.handle_state(link, update(1, start))
    assert bus.published == []

    subscription = bus.subscribe(frozenset({STATES}))
    await pipeline.handle_state(link, update(2, start))
    channel, message = await asyncio.wait_for(subscription.get(), 10)
    published = msgspec.json.decode(message)
    assert channel == STATES
    assert published["robot_id"] == "r1"
    assert published["data"]["position"] == {"x": 1.0, "y": 2.0, "z": 0.0}

    bus.unsubscribe(subscription)
    last = update(3, start)
    await pipeline.handle_state(link, last)
    assert bus.published == [STATES]

    # Every state was stored and acknowledged, listened to or not.
    await wait_for(lambda: link.acked == 3)
    stored = await services.storage.last_telemetry_time("r1")
    assert stored == last.data.timestamp
