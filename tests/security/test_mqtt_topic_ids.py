"""Robot ids in MQTT topics, on the real broker.

An accepted robot id must be exactly one topic level: no ``/`` (a level
separator) and no ``+`` or ``#`` (wildcards), so a subscription to one
robot's topic can never match another robot's messages. Hostile ids never
reach a topic because validation rejects them first.
"""

from __future__ import annotations

import asyncio
import uuid

import aiomqtt
import pytest

from fleethub.errors import InvalidRobotId
from fleethub.ids import validate_robot_id
from security.test_robot_ids import HOSTILE_IDS
from servers import MQTT_HOST, MQTT_PORT, require_mqtt

# Ids at the edges of the allowed set, next to names a wildcard would match.
ACCEPTED_IDS = ["r", "R2-D2", "agv_01.left", "9" * 64, "a-", "a."]
TOPIC_HOSTILE_IDS = ["a/b", "a+", "#", "+", "a#b", "/a", "a/", ""]


@pytest.mark.parametrize("robot_id", HOSTILE_IDS + TOPIC_HOSTILE_IDS)
def test_topic_hostile_ids_rejected(robot_id: str) -> None:
    """An id that would break a topic (or a URL or a log line) is rejected."""
    with pytest.raises(InvalidRobotId):
        validate_robot_id(robot_id)


async def test_accepted_ids_are_single_topic_levels() -> None:
    """Each accepted id's topic delivers only that robot's message on the broker."""
    require_mqtt()
    root = f"fleethub-test/{uuid.uuid4().hex}"
    topics = {
        robot_id: f"{root}/{validate_robot_id(robot_id)}/state"
        for robot_id in ACCEPTED_IDS
    }
    received: dict[str, list[str]] = {robot_id: [] for robot_id in ACCEPTED_IDS}
    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        for topic in topics.values():
            await client.subscribe(topic, qos=1)
        for robot_id, topic in topics.items():
            await client.publish(topic, robot_id.encode(), qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                for robot_id, topic in topics.items():
                    if message.topic.matches(topic):
                        received[robot_id].append(bytes(message.payload).decode())
                if sum(map(len, received.values())) == len(ACCEPTED_IDS):
                    break

    for robot_id in ACCEPTED_IDS:
        assert received[robot_id] == [robot_id]
