"""Route operator commands to the process connected to the robot.

Each process listens on its own bus channel ``node:{node_id}``. When a
command is for a robot whose link is in this process, it goes straight to
the link. Otherwise the live state names the process connected to it
(``RobotSnapshot.node_id``), and the command travels there over the bus as a
``command_request``; that process delivers it and sends a ``command_reply``
back on the sender's channel, carrying the command record or the error.

A robot that reconnects to another process leaves its old socket here
until the operating system notices it is dead. To release it sooner, every
process watches the ``robot_connected`` events on the bus: when the live
state says another process now has a robot this process still has a link
for, the old link is closed with code 4001, as for a replaced connection.

The bus is best effort, so a request that gets no reply within
``reply_timeout_s`` fails with :class:`~fleethub.errors.RobotNotConnected`
(HTTP 409): the caller may retry, and the robot ignores a command id it has
already run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import msgspec

from fleethub.bus.base import EVENTS, EventBus
from fleethub.commands.service import CommandService
from fleethub.errors import FleethubError, RobotNotConnected
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
    command_type: str
    params: dict[str, Any]


class CommandReply(msgspec.Struct, tag="command_reply", tag_field="type"):
    request_id: str
    command: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(CommandRequest | CommandReply).decode


class _EventFields(msgspec.Struct):
    type: str
    robot_id: str | None = None


class _EventEnvelope(msgspec.Struct):
    data: _EventFields


_decode_event = msgspec.json.Decoder(_EventEnvelope).decode


class RoutedCommandService(CommandService):
    """A :class:`CommandService` that reaches robots connected to other processes."""

    def __init__(
        self,
        links: LinkRegistry,
        emit: Any,
        *,
        bus: EventBus,
        live: LiveState,
        node_id: str,
        reply_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(links, emit)
        self.bus = bus
        self.live = live
        self.node_id = node_id
        self.reply_timeout_s = reply_timeout_s
        self._waiting: dict[str, asyncio.Future[CommandReply]] = {}
        self._subscription = bus.subscribe(frozenset({node_channel(node_id)}))
        self._events = bus.subscribe(frozenset({EVENTS}))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start serving command requests and watching for robots taken over."""
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

    async def send(
        self, robot_id: str, command_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Deliver a command here or through the process connected to the robot.

        Raises :class:`RobotNotConnected` when no process is connected to the
        robot or the connected process does not reply in time.
        """
        if self.links.get(robot_id) is not None:
            return await super().send(robot_id, command_type, params)
        snapshot = await self.live.get(robot_id)
        holder = snapshot.node_id if snapshot is not None and snapshot.online else None
        if holder is None or holder == self.node_id:
            return await super().send(robot_id, command_type, params)
        return await self._forward(holder, robot_id, command_type, params)

    async def _forward(
        self, holder: str, robot_id: str, command_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        request = CommandRequest(
            request_id=uuid.uuid4().hex,
            reply_to=self.node_id,
            robot_id=robot_id,
            command_type=command_type,
            params=params,
        )
        reply_future = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = reply_future
        logger.info(
            "command_forwarded", extra={"robot_id": robot_id, "target_node": holder}
        )
        try:
            await self.bus.publish(node_channel(holder), msgspec.json.encode(request))
            reply = await asyncio.wait_for(reply_future, self.reply_timeout_s)
        except TimeoutError:
            raise RobotNotConnected(
                f"Robot {robot_id!r} is connected to process {holder!r}, which did not "
                f"answer within {self.reply_timeout_s:g} s; retry the command.",
                robot_id=robot_id,
                node_id=holder,
            ) from None
        finally:
            self._waiting.pop(request.request_id, None)
        return _unpack(reply)

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
                    future.set_result(message)
            else:
                await self._answer(message)

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

    async def _answer(self, request: CommandRequest) -> None:
        reply = CommandReply(request_id=request.request_id)
        try:
            reply.command = await CommandService.send(
                self, request.robot_id, request.command_type, request.params
            )
        except FleethubError as exc:
            logger.info(
                "command_route_failed",
                extra={
                    "robot_id": request.robot_id,
                    "requester": request.reply_to,
                    "error": exc.code,
                },
            )
            reply.error = exc.to_dict()
        await self.bus.publish(
            node_channel(request.reply_to), msgspec.json.encode(reply)
        )


def _unpack(reply: CommandReply) -> dict[str, Any]:
    """Return the command record, or raise the holder's error here."""
    if reply.command is not None:
        return reply.command
    error = reply.error or {}
    raise RobotNotConnected(
        error.get(
            "message",
            "The process connected to the robot could not deliver the command.",
        ),
        **error.get("details", {}),
    )
