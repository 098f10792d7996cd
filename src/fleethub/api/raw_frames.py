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
"""

from __future__ import annotations

import asyncio
import struct
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
    """The connection is closing or closed; no more frames can be written."""


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

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            scope["extensions"][RAW_FRAMES_EXTENSION] = RawFrameWriter(self)

    def open_for_frames(self) -> bool:
        """Whether data frames may be written now."""
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and not self.transport.is_closing()
            and self.conn.close_rcvd is None
        )


def raw_writer(scope: dict[str, Any]) -> RawFrameWriter | None:
    """Return the connection's raw-frame writer, or None without the extension."""
    writer = scope.get("extensions", {}).get(RAW_FRAMES_EXTENSION)
    return writer if isinstance(writer, RawFrameWriter) else None
