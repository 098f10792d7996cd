"""One simulated robot of the load process, its pacing and the shared counters."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime, timedelta

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from fleethub.protocol import (
    Ack,
    CommandFrame,
    CommandResponse,
    CommandResult,
    ErrorFrame,
    Orientation,
    Position,
    RobotState,
    RobotStatus,
    StateUpdate,
    Velocity,
    decode_server_frame,
    encode,
)

# A robot that fell behind its schedule sends at most this many states at once
# and drops the rest of the backlog, so the measured send rate shows the limit
# instead of a burst that catches up later.
MAX_BURST = 50

# Shortest sleep between bursts, seconds; fewer wake-ups at high rates.
MIN_SLEEP_S = 0.01

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Recorder:
    """Counters shared by every robot of one load process."""

    def __init__(self) -> None:
        self.total_sent = 0
        self.total_acked = 0
        self.disconnects = 0
        self.error_codes: dict[str, int] = {}
        self.command_receipts: dict[str, float] = {}
        self._drained = asyncio.Event()
        self.begin_step()

    def begin_step(self) -> None:
        """Reset the per-step counters; later acks count only for this step."""
        self.step_id = getattr(self, "step_id", 0) + 1
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.latencies: list[float] = []

    def count_sent(self) -> None:
        self.sent += 1
        self.total_sent += 1
        self._drained.clear()

    def count_acked(self, latency_s: float, step_id: int) -> None:
        self.total_acked += 1
        if step_id == self.step_id:
            self.acked += 1
            self.latencies.append(latency_s)
        if self.total_acked >= self.total_sent:
            self._drained.set()

    def count_error(self, code: str) -> None:
        self.errors += 1
        self.error_codes[code] = self.error_codes.get(code, 0) + 1

    async def wait_drained(self, limit_s: float) -> bool:
        """Wait up to ``limit_s`` until every sent state is acknowledged."""
        if self.total_acked >= self.total_sent:
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), limit_s)
        except TimeoutError:
            return False
        return True


class Pacer:
    """The current send interval of every robot; None while paused."""

    def __init__(self) -> None:
        self.interval: float | None = None
        self.start = 0.0
        self.generation = 0
        self.finished = False
        self.wake = asyncio.Event()

    def run(self, interval: float | None) -> None:
        """Start a step in which each robot sends one state per ``interval`` s."""
        self.interval = interval
        self.start = time.perf_counter()
        self.generation += 1
        self.wake.set()

    def pause(self) -> None:
        self.interval = None
        self.wake.clear()

    def finish(self) -> None:
        self.pause()
        self.finished = True
        self.wake.set()


class BenchRobot:
    """One robot connection: sends paced states, times acks, replies to commands."""

    def __init__(
        self,
        robot_id: str,
        ws: ClientConnection,
        recorder: Recorder,
        pacer: Pacer,
        phase: float,
        answers_commands: bool,
    ) -> None:
        self.robot_id = robot_id
        self.ws = ws
        self.recorder = recorder
        self.pacer = pacer
        self.phase = phase
        self.answers_commands = answers_commands
        self.seq = 0
        self._last_us = 0
        self._pending: deque[tuple[int, float, int]] = deque()

    def start(self) -> list[asyncio.Task[None]]:
        """Start the send and receive tasks."""
        return [
            asyncio.create_task(self._send_loop(), name=f"send-{self.robot_id}"),
            asyncio.create_task(self._receive_loop(), name=f"recv-{self.robot_id}"),
        ]

    async def close(self) -> None:
        await self.ws.close()

    async def _send_loop(self) -> None:
        pacer = self.pacer
        generation = -1
        sent = 0
        try:
            while not pacer.finished:
                interval = pacer.interval
                if interval is None:
                    await pacer.wake.wait()
                    continue
                if pacer.generation != generation:
                    generation, sent = pacer.generation, 0
                sent = await self._send_due(interval, sent)
                wake_at = pacer.start + (sent + 1 - self.phase) * interval
                await asyncio.sleep(max(wake_at - time.perf_counter(), MIN_SLEEP_S))
        except ConnectionClosed:
            self.recorder.disconnects += 1

    async def _send_due(self, interval: float, sent: int) -> int:
        """Send the states due by now; return the count the schedule now covers."""
        elapsed = time.perf_counter() - self.pacer.start
        due = int(elapsed / interval + self.phase) - sent
        for _ in range(min(due, MAX_BURST)):
            await self.send_state()
        return sent + max(due, 0)

    async def send_state(self) -> None:
        """Send one state with a timestamp later than the previous one."""
        now_us = time.time_ns() // 1000
        self._last_us = max(now_us, self._last_us + 1)
        state = RobotState(
            timestamp=_EPOCH + timedelta(microseconds=self._last_us),
            position=Position(x=float(self.seq % 100), y=1.0),
            orientation=Orientation(yaw=0.5),
            velocity=Velocity(linear=0.8, angular=0.1),
            status=RobotStatus.MOVING,
            battery=80.0,
        )
        frame = encode(StateUpdate(seq=self.seq, data=state))
        self._pending.append((self.seq, time.perf_counter(), self.recorder.step_id))
        self.seq += 1
        self.recorder.count_sent()
        await self.ws.send(frame, text=True)

    async def _receive_loop(self) -> None:
        try:
            async for raw in self.ws:
                await self._handle(raw)
        except ConnectionClosed:
            pass

    async def _handle(self, raw: str | bytes) -> None:
        try:
            frame = decode_server_frame(raw)
        except msgspec.MsgspecError:
            self.recorder.count_error("unparsed_frame")
            return
        if isinstance(frame, Ack):
            self._acknowledge(frame.seq)
        elif isinstance(frame, ErrorFrame):
            self.recorder.count_error(frame.code)
        elif isinstance(frame, CommandFrame) and self.answers_commands:
            await self._answer(frame)

    def _acknowledge(self, seq: int) -> None:
        now = time.perf_counter()
        pending = self._pending
        while pending and pending[0][0] <= seq:
            _, sent_at, step_id = pending.popleft()
            self.recorder.count_acked(now - sent_at, step_id)

    async def _answer(self, frame: CommandFrame) -> None:
        command_id = str(frame.data.get("command_id", ""))
        self.recorder.command_receipts[command_id] = time.time()
        result = CommandResult(command_id=command_id, status="succeeded")
        await self.ws.send(encode(CommandResponse(data=result)), text=True)
