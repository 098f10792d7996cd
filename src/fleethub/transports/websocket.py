"""The robot WebSocket link, ``/ws/robots/{robot_id}``.

One :class:`WebSocketRobotLink` per connection. Frames from the robot are
decoded and handed to the ingest pipeline; frames to the robot (acks,
commands, errors) go through an outbox drained by a sender task, so the
writer and the API never wait on a slow robot socket.

A bad frame is answered with an ``error`` frame and the connection stays
open. Only three things close it: the robot id in the URL is invalid (close
code 1008), a newer connection for the same robot replaces this one (4001),
or a frame is larger than the transport's hard limit (1009, from the server).

Under ``fleethub serve`` the connection carries the raw-frame extension of
:mod:`fleethub.transports.raw_frames`. The link then writes its frames as pre-built
bytes and reads the robot's messages from the extension's inbox, which skips
the per-message ASGI event dicts, queue and checks. Without the extension
(another ASGI server, the in-process test client) it uses plain ASGI sends
and receives; both paths behave the same towards the robot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fleethub.errors import FleethubError, InvalidRobotId
from fleethub.ids import validate_robot_id
from fleethub.models import Event
from fleethub.protocol import (
    Ack,
    CommandFrame,
    CommandResponse,
    ErrorFrame,
    FrameError,
    Welcome,
    decode_robot_frame,
    encode,
)
from fleethub.security.middleware import throttle_message
from fleethub.transports.raw_frames import (
    ConnectionClosing,
    Disconnected,
    Inbox,
    RawFrameWriter,
    raw_writer,
    text_frame,
)

logger = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_REPLACED = 4001

# Error frames queued beyond this are dropped (and counted): a robot flooding
# bad frames must not grow the server's memory.
MAX_QUEUED_ERRORS = 256

# Reading from the robot pauses while this many messages, or bytes, wait in
# the connection's inbox for the link, so TCP flow control slows the robot.
INBOX_MAX_MESSAGES = 64
INBOX_MAX_BYTES = 1 << 20

# Raw writes wait only for the transport's own high-water mark, like an
# ASGI send. Robot frames are never dropped, so the link sets no lower bound.
_NO_BUFFER_LIMIT = 1 << 62


class WebSocketRobotLink:
    """One robot's WebSocket connection, as seen by the rest of fleethub."""

    def __init__(self, websocket: WebSocket, robot_id: str) -> None:
        self.websocket = websocket
        self.robot_id = robot_id
        self.raw = raw_writer(websocket.scope)
        self.connected_at = time.monotonic()
        self._ack: int | None = None
        self._sent_ack: int | None = None
        self._errors: deque[bytes] = deque()
        self._commands: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped_errors = 0

    # Called by the writer and the API; none of them waits.

    def acknowledge(self, seq: int) -> None:
        if self._ack is None or seq > self._ack:
            self._ack = seq
            self._wake.set()

    def reject_stored(self, seq: int, code: str, message: str) -> None:
        self.send_error(ErrorFrame(code=code, message=message, seq=seq))

    def send_error(self, frame: ErrorFrame) -> None:
        if len(self._errors) >= MAX_QUEUED_ERRORS:
            self._errors.popleft()
            self.dropped_errors += 1
        self._errors.append(encode(frame))
        self._wake.set()

    def send_command(self, payload: dict[str, Any]) -> None:
        self._commands.append(encode(CommandFrame(data=payload)))
        self._wake.set()

    async def close(self, code: int, reason: str) -> None:
        self._closed = True
        self._wake.set()
        if self.websocket.application_state is WebSocketState.CONNECTED:
            try:
                await self.websocket.close(code, reason)
            except RuntimeError:
                pass  # the peer is already gone

    async def run_sender(self) -> None:
        """Drain the outbox to the socket until the link closes."""
        try:
            while not self._closed:
                await self._wake.wait()
                self._wake.clear()
                frames = self._take_outbox()
                if frames:
                    await send_frames(self.websocket, self.raw, frames)
        except (WebSocketDisconnect, RuntimeError, OSError):
            logger.debug("robot_send_failed", extra={"robot_id": self.robot_id})

    def _take_outbox(self) -> list[bytes]:
        # Most wake-ups carry only an acknowledgement, so skip the empty queues.
        frames: list[bytes] = []
        if self._errors:
            frames.extend(self._errors)
            self._errors.clear()
        if self._commands:
            frames.extend(self._commands)
            self._commands.clear()
        if self._ack is not None and self._ack != self._sent_ack:
            frames.append(encode(Ack(seq=self._ack)))
            self._sent_ack = self._ack
        return frames


async def send_frames(
    websocket: WebSocket, raw: RawFrameWriter | None, frames: list[bytes]
) -> None:
    """Send encoded frames in order, as one raw write when the extension is there.

    A raw write that finds the peer behind waits until the transport drains
    and tries again, as an ASGI send would. Raises ConnectionClosing (an
    OSError) once the connection is closing.
    """
    if raw is None:
        for frame in frames:
            await websocket.send_text(frame.decode())
        return
    if len(frames) == 1:
        data = text_frame(frames[0])
    else:
        data = b"".join([text_frame(frame) for frame in frames])
    while not raw.write(data, _NO_BUFFER_LIMIT):
        await raw.wait_writable()


async def serve_robot(websocket: WebSocket, robot_id: str) -> None:
    """Run one robot connection from handshake to close."""
    services = websocket.app.state.services
    await websocket.accept()
    raw = raw_writer(websocket.scope)
    try:
        validate_robot_id(robot_id)
    except InvalidRobotId as exc:
        frame = ErrorFrame(code=exc.code, message=exc.message, details=exc.details)
        await send_frames(websocket, raw, [encode(frame)])
        await websocket.close(CLOSE_POLICY_VIOLATION, "invalid robot id")
        return

    link = WebSocketRobotLink(websocket, robot_id)
    previous = services.links.register(link)
    if previous is not None:
        logger.info("robot_link_replaced", extra={"robot_id": robot_id})
        await previous.close(CLOSE_REPLACED, "replaced by a newer connection")
    try:
        last = await services.pipeline.open_robot(robot_id)
    except (FleethubError, TimeoutError) as exc:
        services.links.unregister(link)
        message = getattr(exc, "message", "Timed out waiting for storage.")
        logger.warning(
            "robot_open_failed", extra={"robot_id": robot_id, "error": message}
        )
        frame = ErrorFrame(code="storage_unavailable", message=message, retryable=True)
        await send_frames(websocket, raw, [encode(frame)])
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "storage unavailable")
        return

    try:
        await send_frames(
            websocket, raw, [encode(Welcome(robot_id=robot_id, last_timestamp=last))]
        )
    except ConnectionClosing:
        pass  # the inbox reports the disconnect; the loop below ends there
    await _announce(
        services, robot_id, "robot_connected", replaced=previous is not None
    )
    sender = asyncio.create_task(link.run_sender(), name=f"sender-{robot_id}")
    try:
        if raw is None:
            await _receive_loop(services, link)
        else:
            inbox = raw.open_inbox(INBOX_MAX_MESSAGES, INBOX_MAX_BYTES)
            await _inbox_loop(services, link, inbox)
    finally:
        sender.cancel()
        if services.links.unregister(link):
            await services.live.set_offline(robot_id, services.node_id)
            services.pipeline.close_robot(robot_id)
            await _announce(services, robot_id, "robot_disconnected")


async def _announce(services: Any, robot_id: str, event_type: str, **data: Any) -> None:
    if event_type == "robot_connected":
        await services.live.set_online(
            robot_id, services.node_id, services.pipeline.clock()
        )
    logger.info(event_type, extra={"robot_id": robot_id})
    await services.pipeline.emit(Event(type=event_type, robot_id=robot_id, data=data))


async def _receive_loop(services: Any, link: WebSocketRobotLink) -> None:
    """Read through ASGI; the security middleware's receive applies the rate limit."""
    websocket = link.websocket
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        await _accept(services, link, raw)


async def _inbox_loop(services: Any, link: WebSocketRobotLink, inbox: Inbox) -> None:
    """Read from the inbox, applying the rate limit the ASGI receive would have."""
    websocket = link.websocket
    # The security middleware stores the principal only when authentication is
    # on, which is exactly when its receive wrapper would count each message.
    principal = None
    security = None
    if services.settings.auth_enabled:
        principal = websocket.scope.get("state", {}).get("principal")
        security = services.security
    while True:
        try:
            raw = await inbox.get()
        except Disconnected:
            return
        if principal is not None:
            try:
                await throttle_message(websocket.send, security, principal)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
        await _accept(services, link, raw)


async def _accept(services: Any, link: WebSocketRobotLink, raw: str | bytes) -> None:
    """Check one incoming message's size, wait while the writer is full, handle it."""
    max_bytes = services.settings.max_frame_bytes
    if _frame_size(raw, max_bytes) > max_bytes:
        link.send_error(
            ErrorFrame(
                code="frame_too_large",
                message=f"Frame is larger than {max_bytes} bytes.",
                details={"limit": max_bytes},
            )
        )
        services.pipeline.stats.count_rejection("frame_too_large")
        return
    writer = services.telemetry_writer
    if writer.full:
        link.send_error(
            ErrorFrame(
                code="slow_down",
                message="Telemetry buffer is full; reading pauses until it drains.",
                retryable=True,
            )
        )
        await writer.wait_for_space()
    await _handle_frame(services, link, raw)


def _frame_size(raw: str | bytes, limit: int) -> int:
    # A str can be up to 4 bytes per character in UTF-8; only encode when that
    # could matter.
    if isinstance(raw, bytes) or len(raw) * 4 <= limit:
        return len(raw)
    return len(raw.encode())


async def _handle_frame(
    services: Any, link: WebSocketRobotLink, raw: str | bytes
) -> None:
    pipeline = services.pipeline
    try:
        frame = decode_robot_frame(raw)
    except FrameError as exc:
        pipeline.stats.count_rejection(exc.code)
        link.send_error(exc.to_frame())
        return
    try:
        if isinstance(frame, CommandResponse):
            await services.commands.handle_response(link.robot_id, frame.data)
        else:
            await pipeline.handle_state(link, frame)
    except FleethubError as exc:
        pipeline.stats.count_rejection(exc.code)
        seq = getattr(frame, "seq", None)
        link.send_error(
            ErrorFrame(
                code=exc.code,
                message=exc.message,
                seq=seq,
                retryable=exc.retryable,
                details=exc.details,
            )
        )
    except Exception:
        logger.exception("robot_frame_failed", extra={"robot_id": link.robot_id})
        link.send_error(
            ErrorFrame(
                code="internal_error",
                message="The server failed to handle this frame.",
                seq=getattr(frame, "seq", None),
            )
        )
