"""A minimal WebSocket client for the benchmark's subscriber process.

The fan-out scenario holds up to a thousand sockets in one process that
shares two cores with the server and the load. A full client library spends
tens of microseconds of Python per frame (a frame object, an assembler, a
queue hop per message), which at 50,000 frames a second outweighs the server
under test. This client parses frames straight out of ``data_received`` and
hands each complete message to a callback, with nothing queued in between.

It does what a subscriber needs and no more: the opening handshake without
extensions, text and binary messages including fragmented ones, answering
pings, and the closing handshake. Anything the server must not send (masked
frames, reserved bits, oversized or fragmented control frames) fails the
connection with close code 1002. It is for the benchmark only: no TLS, no
proxies, no compression.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
MAX_HEADER_BYTES = 64 * 1024

# (message, wall-clock second at which the bytes carrying its end arrived).
# The message may be a memoryview into the read buffer, valid only during the
# call: copy it with bytes() to keep it.
MessageHandler = Callable[[bytes | memoryview, float], None]


class HandshakeFailed(Exception):
    """The server did not switch protocols; ``status`` is its HTTP status or 0."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (client frames are masked)."""
    if not payload:
        return payload
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """Build one masked client frame."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    key = os.urandom(4)
    return header + key + mask(payload, key)


class ClientProtocol(asyncio.Protocol):
    """One client connection: handshake, frame parsing, pings and closing."""

    def __init__(
        self,
        host: str,
        path: str,
        on_message: MessageHandler,
        clock: Callable[[], float],
    ) -> None:
        self._host = host
        self._path = path
        self._on_message = on_message
        self._clock = clock
        self._key = base64.b64encode(os.urandom(16))
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._handshaken = False
        self._close_sent = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self._transport = transport  # type: ignore[assignment]
        request = (
            f"GET {self._path} HTTP/1.1\r\n"
            f"Host: {self._host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                HandshakeFailed("connection closed during the handshake")
            )
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._handshaken and not self._buffer:
            # Most reads contain whole frames: parse them in place, keep the rest.
            end = self._read_frames(data, self._clock())
            if end < len(data):
                self._buffer += data[end:]
            return
        self._buffer += data
        if not self._handshaken and not self._read_handshake():
            return
        end = self._read_frames(self._buffer, self._clock())
        del self._buffer[:end]

    def _read_handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self._fail_handshake(HandshakeFailed("response headers too long"))
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        parts = head[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
        if status != 101:
            self._fail_handshake(HandshakeFailed(f"HTTP {status}", status))
            return False
        if headers.get("sec-websocket-accept") != expected:
            self._fail_handshake(HandshakeFailed("wrong Sec-WebSocket-Accept", status))
            return False
        if headers.get("sec-websocket-extensions"):
            self._fail_handshake(HandshakeFailed("unrequested extension", status))
            return False
        self._handshaken = True
        self.opened.set_result(None)
        return True

    def _fail_handshake(self, exc: HandshakeFailed) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        assert self._transport is not None
        self._transport.close()

    def _read_frames(self, buffer: bytes | bytearray, received_at: float) -> int:
        """Handle every whole frame in ``buffer``; return where the rest starts."""
        with memoryview(buffer) as view:
            return self._read_frames_in(buffer, view, received_at)

    def _read_frames_in(
        self, buffer: bytes | bytearray, view: memoryview, received_at: float
    ) -> int:
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            first = buffer[pos]
            second = buffer[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            end = start + length
            if end > size:
                break
            if second & 0x80 or first & 0x70:
                self._fail(CLOSE_PROTOCOL_ERROR)
                return size
            pos = end
            if not self._frame(
                first & 0x80, first & 0x0F, view[start:end], received_at
            ):
                return size
        return pos

    def _frame(
        self, fin: int, opcode: int, view: memoryview, received_at: float
    ) -> bool:
        """Handle one frame; return False once the connection is failing.

        ``view`` points into the read buffer: a complete message is handed
        over as that view (msgspec decodes it without a copy) and must not be
        kept, while fragments and control payloads are copied.
        """
        if opcode in (OP_TEXT, OP_BINARY):
            if self._fragments:
                return self._fail(CLOSE_PROTOCOL_ERROR)
            if fin:
                self._on_message(view, received_at)
            else:
                self._fragments.append(bytes(view))
            return True
        payload = bytes(view)
        if opcode == OP_CONTINUATION:
            if not self._fragments:
                return self._fail(CLOSE_PROTOCOL_ERROR)
            self._fragments.append(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments.clear()
                self._on_message(message, received_at)
            return True
        if opcode >= OP_CLOSE and (not fin or len(payload) > 125):
            return self._fail(CLOSE_PROTOCOL_ERROR)
        if opcode == OP_PING:
            self._write(client_frame(OP_PONG, payload))
            return True
        if opcode == OP_PONG:
            return True
        if opcode == OP_CLOSE:
            self.close_code = (
                struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            )
            # Echo the code, then let the server close the TCP connection first.
            self._send_close(payload[:2])
            return False
        return self._fail(CLOSE_PROTOCOL_ERROR)

    def _fail(self, code: int) -> bool:
        self._send_close(struct.pack("!H", code))
        assert self._transport is not None
        self._transport.close()
        return False

    def _send_close(self, payload: bytes) -> None:
        if not self._close_sent:
            self._close_sent = True
            self._write(client_frame(OP_CLOSE, payload))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def send_text(self, text: str) -> None:
        """Send one text message (the subscriber never needs to)."""
        self._write(client_frame(OP_TEXT, text.encode()))

    async def close(self, timeout_s: float = 5.0) -> None:
        """Start the closing handshake and wait for the server to end the socket."""
        self._send_close(struct.pack("!H", CLOSE_NORMAL))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        except TimeoutError:
            pass
        finally:
            if self._transport is not None:
                self._transport.close()


async def open_client(
    url: str,
    on_message: MessageHandler,
    clock: Callable[[], float],
    timeout_s: float = 30.0,
) -> ClientProtocol:
    """Connect to ``ws://host:port/path`` and return once the handshake is done."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"Only ws:// URLs are supported, not {url!r}.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    loop = asyncio.get_running_loop()
    host_header = parts.netloc
    _, protocol = await asyncio.wait_for(
        loop.create_connection(
            lambda: ClientProtocol(host_header, path, on_message, clock),
            parts.hostname,
            parts.port or 80,
        ),
        timeout_s,
    )
    try:
        await asyncio.wait_for(asyncio.shield(protocol.opened), timeout_s)
    except BaseException:
        if protocol._transport is not None:
            protocol._transport.close()
        raise
    return protocol
