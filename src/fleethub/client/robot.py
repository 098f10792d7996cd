"""An async client for the robot WebSocket protocol.

:class:`RobotClient` keeps one connection open, reconnecting with
exponential back-off and jitter. Every state gets a sequence number and stays
in an in-flight buffer until the server acknowledges it (stored) or rejects
it (error frame naming its ``seq``). After a reconnect the server's
``welcome`` frame gives the newest stored timestamp: buffered states at or
before it are known to be stored, the rest are sent again in order.

``send_state`` waits while ``max_in_flight`` states are unacknowledged, which
passes the server's back-pressure on to the robot's own loop.

Commands arrive through ``on_command``. The client replies to each one with an
``acknowledged`` response, runs the handler and sends its final status. The
server delivers at least once, so a command id seen before (a resend after a
lost acknowledgement) is answered again with the stored outcome but not run
twice, and a resend that arrives while the first copy still runs is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
import websockets

from fleethub.protocol import (
    Ack,
    CommandFrame,
    CommandResponse,
    CommandResult,
    ErrorFrame,
    RobotState,
    StateUpdate,
    Welcome,
    decode_server_frame,
    encode,
)

logger = logging.getLogger(__name__)

# A handler gets the command frame's data and returns the final status
# ("succeeded", "failed" or "rejected") and an optional message.
Outcome = tuple[str, str | None]
CommandHandler = Callable[[dict[str, Any]], Awaitable[Outcome]]

MAX_REMEMBERED_COMMANDS = 1024


class ClientStats(msgspec.Struct):
    """What the client sent and what became of it."""

    sent: int = 0
    acked: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    resent: int = 0
    reconnects: int = 0
    commands: int = 0
    duplicate_commands: int = 0


class RobotClient:
    """One robot's link to a fleethub server."""

    def __init__(
        self,
        url: str,
        robot_id: str,
        *,
        on_command: CommandHandler | None = None,
        max_in_flight: int = 1000,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = f"{url.rstrip('/')}/ws/robots/{robot_id}"
        self.robot_id = robot_id
        self.on_command = on_command
        self.max_in_flight = max_in_flight
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.headers = headers or {}
        self.stats = ClientStats()
        self.errors: list[ErrorFrame] = []
        self._seq = 0
        self._in_flight: OrderedDict[int, tuple[datetime, bytes]] = OrderedDict()
        # A future of the outcome per command id. A copy that arrives while the
        # command still runs waits for this future instead of running it again.
        self._seen_commands: OrderedDict[str, asyncio.Future[Outcome]] = OrderedDict()
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._socket: Any = None
        self._connected = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # The error that ended the latest connection attempt, for start()'s message.
        self.last_error: str | None = None

    async def __aenter__(self) -> RobotClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self, timeout: float = 10.0) -> None:
        """Start the connection task and wait for the first connection.

        Raises ``TimeoutError`` after ``timeout`` seconds without a connection,
        naming the last connection error (an HTTP 401 for a missing
        credential, for example), and stops the connection task first so
        that it does not retry forever.
        """
        self._task = asyncio.create_task(
            self._run(), name=f"robot-client-{self.robot_id}"
        )
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise TimeoutError(
                f"No connection to {self.url} within {timeout:g} s; last error: "
                f"{self.last_error or 'none'}."
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; unacknowledged states are abandoned."""
        self._closing = True
        if self._socket is not None:
            await self._socket.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def in_flight(self) -> int:
        """Number of states sent but neither acknowledged nor rejected."""
        return len(self._in_flight)

    async def send_state(self, state: RobotState) -> int:
        """Send a state and return its sequence number.

        Waits while the in-flight buffer is full. The state is buffered before
        it is sent, so a connection lost mid-send loses nothing.
        """
        while len(self._in_flight) >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()
        self._seq += 1
        frame = encode(StateUpdate(seq=self._seq, data=state))
        self._in_flight[self._seq] = (state.timestamp, frame)
        self._drained.clear()
        self.stats.sent += 1
        await self._send(frame)
        return self._seq

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every state sent so far is acknowledged or rejected."""
        await asyncio.wait_for(self._drained.wait(), timeout)

    async def _send(self, frame: bytes) -> None:
        socket = self._socket
        if socket is None:
            return  # sent on reconnect
        try:
            await socket.send(frame.decode())
        except websockets.ConnectionClosed:
            pass  # the connection task reconnects and resends

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                async with websockets.connect(
                    self.url, additional_headers=self.headers, max_size=2**24
                ) as socket:
                    attempt = 0
                    await self._serve(socket)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                self.last_error = str(exc)
                logger.debug("robot_client_disconnected", extra={"error": str(exc)})
            self._socket = None
            self._connected.clear()
            if self._closing:
                return
            attempt += 1
            self.stats.reconnects += 1
            await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff_s, self.min_backoff_s * 2 ** min(attempt, 16))
        return random.uniform(ceiling / 2, ceiling)

    async def _serve(self, socket: Any) -> None:
        async for raw in socket:
            frame = decode_server_frame(raw)
            if isinstance(frame, Welcome):
                await self._resume(socket, frame.last_timestamp)
            elif isinstance(frame, Ack):
                self._settle(lambda seq, upto=frame.seq: seq <= upto, acked=True)
            elif isinstance(frame, ErrorFrame):
                self._on_error(frame)
            elif isinstance(frame, CommandFrame):
                # The set keeps a reference so the task is not garbage collected.
                task = asyncio.create_task(self._run_command(frame.data))
                self._command_tasks.add(task)
                task.add_done_callback(self._command_tasks.discard)

    async def _resume(self, socket: Any, last_stored: datetime | None) -> None:
        """Drop what the server already stored, resend the rest, then go live."""
        if last_stored is not None:
            self._settle(lambda seq: self._in_flight[seq][0] <= last_stored, acked=True)
        # A state sent while a resend waits on the socket is buffered only (the
        # socket is not live yet), so loop until no buffered state is left unsent.
        resent_up_to = 0
        while pending := [seq for seq in self._in_flight if seq > resent_up_to]:
            for seq in pending:
                entry = self._in_flight.get(seq)
                if entry is not None:
                    self.stats.resent += 1
                    await socket.send(entry[1].decode())
                resent_up_to = seq
        self._socket = socket
        self._connected.set()

    def _on_error(self, frame: ErrorFrame) -> None:
        self.errors.append(frame)
        del self.errors[:-100]
        if frame.seq is None or frame.seq not in self._in_flight:
            return
        self.stats.rejected[frame.code] = self.stats.rejected.get(frame.code, 0) + 1
        self._settle(lambda seq: seq == frame.seq, acked=False)

    def _settle(self, matches: Callable[[int], bool], *, acked: bool) -> None:
        done = [seq for seq in self._in_flight if matches(seq)]
        for seq in done:
            del self._in_flight[seq]
        if acked:
            self.stats.acked += len(done)
        if len(self._in_flight) < self.max_in_flight:
            self._room.set()
        if not self._in_flight:
            self._drained.set()

    async def _run_command(self, data: dict[str, Any]) -> None:
        command_id = str(data.get("command_id", ""))
        seen = self._seen_commands.get(command_id)
        if seen is not None:
            self.stats.duplicate_commands += 1
            await self._respond(command_id, *await asyncio.shield(seen))
            return

        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._seen_commands[command_id] = outcome
        while len(self._seen_commands) > MAX_REMEMBERED_COMMANDS:
            self._seen_commands.popitem(last=False)
        self.stats.commands += 1
        await self._respond(command_id, "acknowledged", None)
        outcome.set_result(await self._execute(data))
        await self._respond(command_id, *outcome.result())

    async def _execute(self, data: dict[str, Any]) -> Outcome:
        if self.on_command is None:
            return "rejected", "This robot has no command handler."
        try:
            return await self.on_command(data)
        except Exception as exc:
            logger.exception("robot_command_failed", extra={"robot_id": self.robot_id})
            return "failed", f"Command handler raised {type(exc).__name__}: {exc}"

    async def _respond(self, command_id: str, status: str, message: str | None) -> None:
        result = CommandResult(command_id=command_id, status=status, message=message)  # type: ignore[arg-type]
        await self._send(encode(CommandResponse(data=result)))
