"""Write pre-built WebSocket frames straight to a connection's transport.

An ASGI ``websocket.send`` goes through Starlette, every middleware's send
wrapper and uvicorn's sans-io protocol, which frames the message again for
each connection. The operator stream sends the same bytes to many
subscribers, and a server-to-client text frame is the same bytes for all of
them: it is unmasked, and a frame with its reserved bits clear is valid even
when permessage-deflate was negotiated (it is simply not compressed). So the
stream builds each frame once and writes it to every subscriber.

:class:`RawFrameWebSocketProtocol` is uvicorn's default WebSocket protocol
plus an ASGI extension, ``fleethub.websocket.raw_frames``, whose value is a
:class:`RawFrameWriter`. ``fleethub serve`` and the test servers use it; under
another server the extension is absent and the stream falls back to plain
sends.

Each write is whole frames in one ``transport.write`` call, and the protocol
writes its own frames (pongs, keep-alive pings, the close frame) the same
way from the same event loop, so nothing can interleave inside a frame.

The extension also carries an inbox for the other direction. Once an
application opens it (:meth:`RawFrameWriter.open_inbox`), each complete
message goes from the protocol straight into the inbox, as the text or the
bytes alone, instead of through uvicorn's queue of ASGI event dicts and
Starlette's receive checks. The robot link, which reads thousands of small
messages a second, uses it.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)

RAW_FRAMES_EXTENSION = "fleethub.websocket.raw_frames"

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """Frame UTF-8 ``payload`` as one final, unmasked server text frame."""
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", _FIN_TEXT, length) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, length) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, length) + payload


class ConnectionClosing(ConnectionError):
    """Raised when the connection is closing or closed and takes no more frames."""


class RawFrameWriter:
    """The raw-frame extension of one connection."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: RawFrameWebSocketProtocol) -> None:
        self._protocol = protocol

    def write(self, frames: bytes, max_buffered: int) -> bool:
        """Write whole frames unless the peer is behind.

        The peer is behind when ``max_buffered`` bytes already wait to be
        sent, or the transport paused writing (its high-water mark, 64 KiB by
        default). Then nothing is written and this returns False.
        Raises :class:`ConnectionClosing` once a close frame was sent or the
        connection is going away.
        """
        protocol = self._protocol
        if not protocol.open_for_frames():
            raise ConnectionClosing("The WebSocket connection is closing.")
        transport = protocol.transport
        if (
            not protocol.writable.is_set()
            or transport.get_write_buffer_size() >= max_buffered
        ):
            return False
        transport.write(frames)
        return True

    async def wait_writable(self) -> None:
        """Wait until the transport drained below its low-water mark, or closed."""
        await self._protocol.writable.wait()

    def open_inbox(self, max_messages: int, max_bytes: int) -> Inbox:
        """Route the connection's incoming messages to an inbox from now on.

        Messages and the disconnect that uvicorn already queued move to the
        inbox first, so nothing is lost or reordered. After this, the
        application reads with :meth:`Inbox.get` only, because the ASGI
        receive would wait forever. Reading pauses while the inbox contains
        ``max_messages`` messages or ``max_bytes`` bytes. The messages of
        the read that crossed the bound are kept, as uvicorn keeps them in
        its queue, so the inbox can exceed it by one socket read.
        """
        return self._protocol.open_inbox(max_messages, max_bytes)


class Disconnected(Exception):
    """The peer closed the connection or it was lost; carries the close code."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Inbox:
    """Complete incoming messages of one connection, oldest first.

    The protocol appends and the application takes, both on the event loop.
    The protocol also hands over each ``websocket.disconnect`` event it
    would have queued for ASGI, so the inbox replaces uvicorn's queue:
    :meth:`put_nowait` is the one call the protocol makes on it.
    """

    __slots__ = (
        "_protocol",
        "_messages",
        "_bytes",
        "_waiter",
        "_disconnect",
        "_max_messages",
        "_max_bytes",
        "_paused",
    )

    def __init__(
        self, protocol: RawFrameWebSocketProtocol, max_messages: int, max_bytes: int
    ) -> None:
        self._protocol = protocol
        self._messages: deque[str | bytes] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._disconnect: Disconnected | None = None
        self._max_messages = max(1, max_messages)
        self._max_bytes = max(1, max_bytes)
        self._paused = False

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the messages waiting; past the bound by one socket read at most."""
        return self._bytes

    def append(self, message: str | bytes) -> None:
        """Add one message; pause reading once the inbox is full."""
        self._messages.append(message)
        self._bytes += len(message)
        self._wake()
        if not self._paused and (
            len(self._messages) >= self._max_messages or self._bytes >= self._max_bytes
        ):
            self._paused = True
            self._protocol.pause_inbox_reading()

    def put_nowait(self, event: dict[str, Any]) -> None:
        """Take an ASGI event the protocol would have queued for the application."""
        if event["type"] == "websocket.receive":
            text = event.get("text")
            self.append(text if text is not None else event.get("bytes") or b"")
        elif event["type"] == "websocket.disconnect" and self._disconnect is None:
            self._disconnect = Disconnected(
                event.get("code", 1005), event.get("reason") or ""
            )
            self._wake()

    def empty(self) -> bool:
        return not self._messages

    async def get(self) -> str | bytes:
        """Return the next message; raise :class:`Disconnected` after the last one."""
        while not self._messages:
            if self._disconnect is not None:
                raise self._disconnect
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        self._bytes -= len(message)
        if self._paused and (
            len(self._messages) <= self._max_messages // 2
            and self._bytes <= self._max_bytes // 2
        ):
            self._paused = False
            self._protocol.resume_inbox_reading()
        return message

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class RawFrameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-io WebSocket protocol with the raw-frame extension.

    It also drops a connection still open ``abort_after_s`` after the
    application returned or the server began to shut down. A closing
    transport first sends what is buffered, and a peer that stopped reading
    never takes it: without the abort, the connection and its buffer would
    stay forever, and a graceful shutdown would wait for that peer.
    """

    abort_after_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._abort_timer: asyncio.TimerHandle | None = None

    def shutdown(self) -> None:
        super().shutdown()
        self._abort_later()

    async def run_asgi(self) -> None:
        # The application is done with the connection, closing frame or not.
        await super().run_asgi()
        self._abort_later()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)

    def _abort_later(self) -> None:
        if self._abort_timer is None and not self.disconnected:
            self._abort_timer = self.loop.call_later(self.abort_after_s, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self.disconnected:
            self.transport.abort()

    inbox: Inbox | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            scope["extensions"][RAW_FRAMES_EXTENSION] = RawFrameWriter(self)

    def open_for_frames(self) -> bool:
        """Return whether data frames may be written now."""
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and not self.transport.is_closing()
            and self.conn.close_rcvd is None
        )

    def open_inbox(self, max_messages: int, max_bytes: int) -> Inbox:
        if self.inbox is not None:
            raise RuntimeError("The inbox of this connection is already open.")
        inbox = Inbox(self, max_messages, max_bytes)
        queued = self.queue
        while not queued.empty():
            inbox.put_nowait(dict(queued.get_nowait()))
        # Every disconnect uvicorn reports from here on goes to the inbox.
        self.queue = inbox  # type: ignore[assignment]
        self.inbox = inbox
        if self.read_paused and not inbox._paused:
            # uvicorn paused for the queue just emptied; the inbox decides now.
            self.read_paused = False
            self.transport.resume_reading()
        return inbox

    def pause_inbox_reading(self) -> None:
        if not self.read_paused and not self.close_sent:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_inbox_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        inbox = self.inbox
        if inbox is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            # Past the application's close: drop it, as uvicorn does, so reads
            # stay active until the peer's close reply arrives.
            return
        if self.curr_msg_data_type == "text":
            try:
                inbox.append(data.decode())
            except UnicodeDecodeError:
                self.logger.info("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
        else:
            inbox.append(bytes(data))


def raw_writer(scope: dict[str, Any]) -> RawFrameWriter | None:
    """Return the connection's raw-frame writer, or None without the extension."""
    writer = scope.get("extensions", {}).get(RAW_FRAMES_EXTENSION)
    return writer if isinstance(writer, RawFrameWriter) else None
