"""Route command payloads to the process connected to the robot.

Each process listens on its own bus channel ``node:{node_id}``. A payload
for a robot whose link is in this process goes straight to the link.
Otherwise the live state names the process connected to the robot
(``RobotSnapshot.node_id``), and the payload travels there over the bus as a
``command_request``; that process hands it to its link and answers with a
``command_reply`` on the sender's channel saying whether it could.

The command itself is stored in the shared database before it is routed,
so a request lost on the bus costs nothing but time: the command stays
``queued``, and the lifecycle sweep of the process holding the robot's link
delivers it (or the robot's next reconnect does). The robot's
``command_response`` can arrive at any process, which updates the same
stored command.

A robot that reconnects to another process leaves its old socket here until
the operating system notices it is dead. To release it sooner, every process
watches the ``robot_connected`` events on the bus: when the live state says
another process now has a robot that this process still has a link for, the
old link is closed with code 4001, as for a replaced connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import msgspec

from fleethub.bus.base import EVENTS, EventBus
from fleethub.commands.router import LocalRouter
from fleethub.errors import FleethubError
from fleethub.live.base import LiveState
from fleethub.transports.registry import LinkRegistry
from fleethub.transports.websocket import CLOSE_REPLACED

logger = logging.getLogger(__name__)


def node_channel(node_id: str) -> str:
    """Return the bus channel that reaches the process ``node_id``."""
    return f"node:{node_id}"


class CommandRequest(msgspec.Struct, tag="command_request", tag_field="type"):
    request_id: str
    reply_to: str
    robot_id: str
    payload: dict[str, Any]


class CommandReply(msgspec.Struct, tag="command_reply", tag_field="type"):
    request_id: str
    delivered: bool


_decode = msgspec.json.Decoder(CommandRequest | CommandReply).decode


class _EventFields(msgspec.Struct):
    type: str
    robot_id: str | None = None


class _EventEnvelope(msgspec.Struct):
    data: _EventFields


_decode_event = msgspec.json.Decoder(_EventEnvelope).decode


class BusRouter:
    """:class:`fleethub.commands.router.CommandRouter` across processes."""

    def __init__(
        self,
        links: LinkRegistry,
        *,
        bus: EventBus,
        live: LiveState,
        node_id: str,
        reply_timeout_s: float = 5.0,
    ) -> None:
        self.links = links
        self.local = LocalRouter(links)
        self.bus = bus
        self.live = live
        self.node_id = node_id
        self.reply_timeout_s = reply_timeout_s
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._subscription = bus.subscribe(frozenset({node_channel(node_id)}))
        self._events = bus.subscribe(frozenset({EVENTS}))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start serving requests from other processes and closing stale links."""
        self._tasks = [
            asyncio.create_task(self._serve_requests(), name="command-router"),
            asyncio.create_task(self._close_stale_links(), name="stale-links"),
        ]

    async def close(self) -> None:
        self.bus.unsubscribe(self._subscription)
        self.bus.unsubscribe(self._events)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def holds(self, robot_id: str) -> bool:
        return self.local.holds(robot_id)

    async def deliver(self, robot_id: str, payload: dict[str, Any]) -> bool:
        if await self.local.deliver(robot_id, payload):
            return True
        try:
            snapshot = await self.live.get(robot_id)
        except FleethubError as exc:
            logger.warning(
                "command_route_lookup_failed",
                extra={"robot_id": robot_id, "error": exc.code},
            )
            return False
        holder = snapshot.node_id if snapshot is not None and snapshot.online else None
        if holder is None or holder == self.node_id:
            return False
        return await self._forward(holder, robot_id, payload)

    async def _forward(
        self, holder: str, robot_id: str, payload: dict[str, Any]
    ) -> bool:
        request = CommandRequest(
            request_id=uuid.uuid4().hex,
            reply_to=self.node_id,
            robot_id=robot_id,
            payload=payload,
        )
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = reply
        logger.info(
            "command_forwarded", extra={"robot_id": robot_id, "target_node": holder}
        )
        try:
            await self.bus.publish(node_channel(holder), msgspec.json.encode(request))
            return await asyncio.wait_for(reply, self.reply_timeout_s)
        except TimeoutError:
            logger.warning(
                "command_forward_timed_out",
                extra={"robot_id": robot_id, "target_node": holder},
            )
            return False
        finally:
            self._waiting.pop(request.request_id, None)

    async def _serve_requests(self) -> None:
        while True:
            _, raw = await self._subscription.get()
            try:
                message = _decode(raw)
            except msgspec.ValidationError:
                logger.warning("command_route_invalid", extra={"node_id": self.node_id})
                continue
            if isinstance(message, CommandReply):
                future = self._waiting.get(message.request_id)
                if future is not None and not future.done():
                    future.set_result(message.delivered)
                continue
            delivered = await self.local.deliver(message.robot_id, message.payload)
            reply = CommandReply(request_id=message.request_id, delivered=delivered)
            await self.bus.publish(
                node_channel(message.reply_to), msgspec.json.encode(reply)
            )

    async def _close_stale_links(self) -> None:
        while True:
            _, raw = await self._events.get()
            try:
                event = _decode_event(raw).data
            except msgspec.ValidationError:
                continue
            if event.type == "robot_connected" and event.robot_id is not None:
                await self._close_if_taken_over(event.robot_id)

    async def _close_if_taken_over(self, robot_id: str) -> None:
        link = self.links.get(robot_id)
        if link is None:
            return
        try:
            snapshot = await self.live.get(robot_id)
        except FleethubError as exc:
            logger.warning(
                "stale_link_check_failed",
                extra={"robot_id": robot_id, "error": exc.code},
            )
            return
        owner = snapshot.node_id if snapshot is not None else None
        if owner is None or owner == self.node_id:
            return
        logger.info(
            "robot_link_taken_over", extra={"robot_id": robot_id, "node_id": owner}
        )
        await link.close(CLOSE_REPLACED, "robot connected to another process")
